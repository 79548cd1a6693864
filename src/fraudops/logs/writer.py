"""The prediction-log writer: serving hands it rows, a background thread inserts batches.

Writes leave the request path. Overflow policy, chosen for the contract "every 200 response
has exactly one row":

* a served (primary) row or a label waits up to ``enqueue_timeout_s`` for room, then raises
  ``LogBackpressureError`` so the server answers 503 instead of a 200 that has no row;
* a shadow row is dropped and counted when the queue is full: it never slows a response.

Inserts skip rows whose ``(request_id, is_shadow)`` is already stored, so a batch retried
after a lost connection cannot store a row twice. A database that is away keeps its batch
retrying (the queue then fills and back-pressure starts); a row the database refuses is
isolated, counted and logged so it cannot block the rows behind it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from sqlalchemy import Engine, Insert, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import InterfaceError, OperationalError

from fraudops.config import Settings
from fraudops.hashing import SaltedHasher
from fraudops.logs.database import open_prediction_log
from fraudops.logs.errors import LogBackpressureError, PredictionLogClosedError, PredictionLogError
from fraudops.logs.records import LabelRecord, PredictionRecord, WriterStats
from fraudops.logs.tables import labels, predictions
from fraudops.timestamps import naive_utc

logger = logging.getLogger(__name__)

#: How far below the server's threads the writer thread's CPU priority is (Linux nice).
#: When the cores are busy, requests run first and the writer catches up in the gaps; the
#: bounded queue and its back-pressure keep every row if it ever cannot.
WRITER_NICENESS = 10
_RETRY_FIRST_DELAY_S = 0.1
_RETRY_MAX_DELAY_S = 5.0

_Row = tuple[Table, dict[str, Any]]  # a table and one row of values for it


class PredictionLogWriter:
    """Batches prediction and label rows from a bounded queue into the log in one thread.

    ``log_prediction`` and ``log_label`` only append to memory; ``flush`` waits until every
    row handed over before it is stored; ``close`` stores everything still queued and stops.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        id_salt: str,
        batch_size: int = 500,
        flush_interval_s: float = 0.05,
        queue_size: int = 20_000,
        enqueue_timeout_s: float = 1.0,
    ) -> None:
        if batch_size < 1 or queue_size < 1 or flush_interval_s <= 0 or enqueue_timeout_s < 0:
            raise ValueError(
                "batch_size and queue_size must be >= 1, flush_interval_s > 0, "
                "enqueue_timeout_s >= 0"
            )
        self.engine = engine
        self._hasher = SaltedHasher(id_salt)
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._capacity = queue_size
        self._enqueue_timeout_s = enqueue_timeout_s
        self._owns_engine = False

        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # producers wait here for space
        self._work = threading.Condition(self._lock)  # the writer thread waits here for rows
        self._progress = threading.Condition(self._lock)  # flush() waits here for stored rows
        self._queue: deque[PredictionRecord | LabelRecord] = deque()
        self._closed = False
        self._enqueued = 0
        self._settled = 0  # stored or rejected: no longer the writer's to keep
        self._flush_until = 0
        self._predictions_written = 0
        self._labels_written = 0
        self._shadow_dropped = 0
        self._rows_rejected = 0

        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings: Settings) -> PredictionLogWriter:
        """A writer on ``settings.log_url`` that disposes of its engine on ``close``."""
        writer = cls(
            open_prediction_log(settings.log_url),
            id_salt=settings.id_hash_salt.get_secret_value(),
            batch_size=settings.prediction_log_batch_size,
            flush_interval_s=settings.prediction_log_flush_interval_s,
            queue_size=settings.prediction_log_queue_size,
            enqueue_timeout_s=settings.prediction_log_enqueue_timeout_s,
        )
        writer._owns_engine = True
        return writer

    def log_prediction(self, record: PredictionRecord, wait_s: float | None = None) -> bool:
        """Queue a score. Served rows wait for room or raise; shadow rows may be dropped.

        ``wait_s`` overrides ``enqueue_timeout_s``: an event loop passes 0 so it is never
        blocked, and on ``LogBackpressureError`` retries with the default wait in a worker
        thread. Returns False only for a dropped shadow row.
        """
        if record.is_shadow:
            return self._offer(record)
        self._put(record, wait_s)
        return True

    def log_label(self, record: LabelRecord, wait_s: float | None = None) -> None:
        """Queue a label; like a served row it waits for room or raises."""
        self._put(record, wait_s)

    def flush(self, timeout: float | None = None) -> None:
        """Return once every row queued before this call is stored (or refused and counted)."""
        with self._lock:
            target = self._enqueued
            self._flush_until = max(self._flush_until, target)
            self._work.notify()
            if not self._progress.wait_for(lambda: self._settled >= target, timeout):
                raise TimeoutError(
                    f"{target - self._settled} log rows still unwritten after {timeout} s"
                )

    def close(self, timeout: float | None = None) -> None:
        """Stop taking rows, store all queued ones, and stop the thread; safe to call twice."""
        with self._lock:
            self._closed = True
            self._work.notify()
            self._room.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise PredictionLogError(
                f"{self.stats().pending} log rows still unwritten after {timeout} s"
            )
        if self._owns_engine:
            self.engine.dispose()

    def stats(self) -> WriterStats:
        with self._lock:
            return WriterStats(
                predictions_written=self._predictions_written,
                labels_written=self._labels_written,
                shadow_dropped=self._shadow_dropped,
                rows_rejected=self._rows_rejected,
                pending=self._enqueued - self._settled,
            )

    def __enter__(self) -> PredictionLogWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- producer side -------------------------------------------------------------------

    def _put(self, record: PredictionRecord | LabelRecord, wait_s: float | None) -> None:
        wait_s = self._enqueue_timeout_s if wait_s is None else wait_s
        with self._lock:
            deadline = time.monotonic() + wait_s
            while not self._closed and len(self._queue) >= self._capacity:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LogBackpressureError(
                        f"prediction log queue full ({self._capacity} rows) for {wait_s} s: "
                        "the database is not keeping up"
                    )
                self._room.wait(remaining)
            if self._closed:
                raise PredictionLogClosedError("the prediction log writer is closed")
            self._append(record)

    def _offer(self, record: PredictionRecord) -> bool:
        with self._lock:
            if self._closed or len(self._queue) >= self._capacity:
                self._shadow_dropped += 1
                return False
            self._append(record)
            return True

    def _append(self, record: PredictionRecord | LabelRecord) -> None:
        self._queue.append(record)
        self._enqueued += 1
        if len(self._queue) == self._batch_size:
            self._work.notify()

    # --- writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        _lower_thread_priority(WRITER_NICENESS)
        while True:
            batch, last = self._next_batch()
            if batch:
                self._store(batch)
            if last:
                return

    def _next_batch(self) -> tuple[list[PredictionRecord | LabelRecord], bool]:
        """Wait until a batch is full, the interval passed, or a flush or close asks."""
        with self._lock:
            if not self._urgent():
                self._work.wait(self._flush_interval_s)
            size = min(self._batch_size, len(self._queue))
            batch = [self._queue.popleft() for _ in range(size)]
            self._room.notify_all()
            return batch, self._closed and not self._queue

    def _urgent(self) -> bool:
        return (
            self._closed
            or len(self._queue) >= self._batch_size
            or self._flush_until > self._settled
        )

    def _store(self, batch: list[PredictionRecord | LabelRecord]) -> None:
        rows = self._to_rows(batch)
        try:
            self._retrying(lambda: self._insert(rows))
            stored = rows
        except Exception as error:
            logger.warning(
                "prediction log: a batch of %d rows was refused (%s); storing them one by one",
                len(rows),
                _brief(error),
            )
            stored = self._insert_one_by_one(rows)
        tables = [table for table, _ in stored]
        with self._lock:
            self._predictions_written += tables.count(predictions)
            self._labels_written += tables.count(labels)
            self._rows_rejected += len(batch) - len(stored)
            self._settled += len(batch)
            self._progress.notify_all()

    def _to_rows(self, batch: list[PredictionRecord | LabelRecord]) -> list[_Row]:
        rows = []
        for record in batch:
            try:
                rows.append(self._to_row(record))
            except Exception as error:  # a malformed record must not stop the writer thread
                logger.error("prediction log: row dropped, %s: %r", _brief(error), record)
        return rows

    def _insert_one_by_one(self, rows: list[_Row]) -> list[_Row]:
        """Store what the database accepts, so one refused row cannot hold back the rest."""
        stored = []
        for row in rows:
            try:
                self._retrying(partial(self._insert, [row]))
                stored.append(row)
            except Exception as error:
                logger.error("prediction log: row dropped, %s: %r", _brief(error), row[1])
        return stored

    def _retrying(self, action: Callable[[], None]) -> None:
        """Repeat ``action`` while the database is away or busy; other errors propagate."""
        delay = _RETRY_FIRST_DELAY_S
        while True:
            try:
                action()
                return
            except (OperationalError, InterfaceError) as error:
                logger.warning(
                    "prediction log: database unavailable (%s); retry in %.1f s",
                    _brief(error),
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_DELAY_S)

    def _insert(self, rows: list[_Row]) -> None:
        with self.engine.begin() as connection:
            for table in (predictions, labels):
                values = [row for owner, row in rows if owner is table]
                if values:
                    connection.execute(self._insert_statement(table), values)

    def _insert_statement(self, table: Table) -> Insert:
        statement: postgresql.Insert | sqlite.Insert = (
            postgresql.insert(table)
            if self.engine.dialect.name == "postgresql"
            else sqlite.insert(table)
        )
        if table is predictions:
            statement = statement.on_conflict_do_nothing(index_elements=["request_id", "is_shadow"])
        return statement

    def _to_row(self, record: PredictionRecord | LabelRecord) -> _Row:
        """Plain Python values only: numpy scalars from a model would trip the drivers."""
        if isinstance(record, LabelRecord):
            label = int(record.label)
            if label not in (0, 1):
                raise ValueError(f"label must be 0 or 1, got {record.label!r}")
            return labels, {
                "transaction_id": int(record.transaction_id),
                "label": label,
                "received_at": record.received_at,
            }
        return predictions, {
            "request_id": str(record.request_id),
            "transaction_id": int(record.transaction_id),
            "logged_at": record.logged_at,
            "tx_datetime": naive_utc(record.tx_datetime),
            "customer_hash": self._hasher.pseudonym(record.customer_id),
            "terminal_hash": self._hasher.pseudonym(record.terminal_id),
            "features": dict(record.features),
            "model_name": record.model_name,
            "model_version": str(record.model_version),
            "model_alias": record.model_alias,
            "arm": record.arm,
            "is_shadow": bool(record.is_shadow),
            "score": float(record.score),
            "decision": bool(record.decision),
            "threshold": float(record.threshold),
            "latency_ms": float(record.latency_ms),
        }


def _lower_thread_priority(niceness: int) -> None:
    """Lower the calling thread's CPU priority by NICENESS, where threads have their own
    (Linux); elsewhere, or without permission, the thread keeps the process's priority."""
    if sys.platform != "linux":
        return
    thread = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(current + niceness, 19))
    except OSError as error:
        logger.info("prediction log: writer keeps the process's priority (%s)", error)


def _brief(error: BaseException) -> str:
    """The driver's own first line, without SQLAlchemy's echo of every bound parameter."""
    cause = getattr(error, "orig", None) or error
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"
