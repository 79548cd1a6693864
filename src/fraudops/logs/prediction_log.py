"""The prediction and label logs: serving writes them, monitoring and backfill read them.

Writes leave the request path: the server hands each row to ``PredictionLogWriter``, whose
background thread inserts batches. Overflow policy, chosen for the contract "every 200
response has exactly one row":

* a served (primary) row or a label waits up to ``enqueue_timeout_s`` for room, then raises
  ``LogBackpressureError`` so the server answers 503 instead of a 200 that has no row;
* a shadow row is dropped and counted when the queue is full: it never slows a response.

Inserts skip rows whose ``(request_id, is_shadow)`` is already stored, so a batch retried
after a lost connection cannot store a row twice. A database that is away keeps its batch
retrying (the queue then fills and back-pressure starts); a row the database refuses is
isolated, counted and logged so it cannot block the rows behind it.

Features are stored as one JSON document per row rather than a column each: the feature set
follows ``params.yaml`` (window lengths), and a JSON column lets rows of two feature sets
share the table without a migration; monitoring reads whole windows and spreads them into
columns (``read_predictions``), so nothing needs to filter on a feature inside SQL.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import orjson
import pandas as pd
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Engine,
    Float,
    Index,
    Insert,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Subquery,
    Table,
    UniqueConstraint,
    and_,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.types import TypeDecorator

from fraudops.config import Settings
from fraudops.hashing import SaltedHasher

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_S = 10.0
POSTGRES_CONNECT_TIMEOUT_S = 5
#: How far below the server's threads the writer thread's CPU priority is (Linux nice).
#: When the cores are busy, requests run first and the writer catches up in the gaps; the
#: bounded queue and its back-pressure keep every row if it ever cannot.
WRITER_NICENESS = 10
_RETRY_FIRST_DELAY_S = 0.1
_RETRY_MAX_DELAY_S = 5.0


class PredictionLogError(RuntimeError):
    """Base of the prediction log's own errors."""


class PredictionLogUnavailableError(PredictionLogError):
    """The log database cannot be reached or created at start."""


class LogBackpressureError(PredictionLogError):
    """A served row found no room in time: answer 503 rather than a 200 without a row."""


class PredictionLogClosedError(PredictionLogError):
    """The writer is closed; rows handed to it now would never be written."""


class UtcDateTime(TypeDecorator):
    """Wall-clock instants stored as naive UTC, read back as aware UTC, on every backend.

    SQLite has no time zone type; storing UTC everywhere keeps range queries identical on
    SQLite and PostgreSQL. A naive value is refused: its zone would be a guess.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"{value!r} has no time zone; pass an aware datetime (UTC)")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


_Row = tuple[Table, dict[str, Any]]  # a table and one row of values for it

_Id = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER keys only

metadata = MetaData()

predictions = Table(
    "predictions",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False),
    Column("transaction_id", BigInteger, nullable=False),
    Column("logged_at", UtcDateTime, nullable=False),
    Column("tx_datetime", DateTime, nullable=False, comment="the transaction's own clock"),
    Column("customer_hash", String(32), nullable=False),
    Column("terminal_hash", String(32), nullable=False),
    Column("features", JSON().with_variant(postgresql.JSONB, "postgresql"), nullable=False),
    Column("model_name", String(128), nullable=False),
    Column("model_version", String(32), nullable=False),
    Column("model_alias", String(64), nullable=False),
    Column("arm", String(64), nullable=False, comment="A/B arm of the request, also on shadows"),
    Column("is_shadow", Boolean, nullable=False),
    Column("score", Float, nullable=False),
    Column("decision", Boolean, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("latency_ms", Float, nullable=False),
    UniqueConstraint("request_id", "is_shadow", name="uq_predictions_request"),
    Index("ix_predictions_logged_at", "logged_at"),
    Index("ix_predictions_tx_datetime", "tx_datetime"),
    Index("ix_predictions_transaction_id", "transaction_id"),
)

labels = Table(
    "labels",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("transaction_id", BigInteger, nullable=False),
    Column("label", SmallInteger, CheckConstraint("label IN (0, 1)"), nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Index("ix_labels_transaction_received", "transaction_id", "received_at"),
)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One model score for one request, as the server knows it; ids are hashed on write.

    ``arm`` is the A/B arm the request was assigned, so a shadow row (``is_shadow``) names
    both the model that scored it (``model_alias``) and the arm whose traffic it shadowed.
    """

    request_id: str
    transaction_id: int
    tx_datetime: dt.datetime
    customer_id: int | str
    terminal_id: int | str
    features: Mapping[str, float]
    model_name: str
    model_version: str
    model_alias: str
    arm: str
    score: float
    decision: bool
    threshold: float
    latency_ms: float
    is_shadow: bool = False
    logged_at: dt.datetime = field(default_factory=_utc_now)


@dataclass(frozen=True, slots=True)
class LabelRecord:
    """A fraud label that arrived for a transaction; later ones supersede earlier ones."""

    transaction_id: int
    label: int
    received_at: dt.datetime = field(default_factory=_utc_now)


@dataclass(frozen=True, slots=True)
class WriterStats:
    """Counters for metrics: rows stored, shadow rows dropped, rows refused, rows queued."""

    predictions_written: int
    labels_written: int
    shadow_dropped: int
    rows_rejected: int
    pending: int


def _json_text(value: Any) -> str:
    """JSON for the features column, from orjson (several times the standard library's
    speed on the writer thread). JSON has no NaN, and PostgreSQL refuses it: orjson writes
    NaN and infinities as null, so a missing feature is stored as null."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


#: How every backend's engine writes and reads JSON columns.
_JSON_CODEC: dict[str, Any] = {"json_serializer": _json_text, "json_deserializer": orjson.loads}


def create_log_engine(url: str) -> Engine:
    """An engine for SQLite (WAL, busy timeout) or PostgreSQL (bounded connect time)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ValueError(
                "the SQLite prediction log needs a file: each connection of "
                "an in-memory database sees a different, empty database"
            )
        engine = create_engine(
            parsed,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S},
            **_JSON_CODEC,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if backend == "postgresql":
        # ON CONFLICT inserts skip SQLAlchemy's multi-VALUES rewrite; psycopg2's execute_batch
        # sends a page of rows per round trip instead of one (about twice the rows per second).
        return create_engine(
            parsed,
            pool_pre_ping=True,
            connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S},
            executemany_mode="values_plus_batch",
            executemany_batch_page_size=1000,
            **_JSON_CODEC,
        )
    raise ValueError(f"unsupported prediction log database {backend!r}: use sqlite or postgresql")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets monitoring read while serving writes; NORMAL sync is safe with WAL on crash."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cursor.close()


def open_prediction_log(url: str) -> Engine:
    """Connect and create the tables if absent; fail now, clearly, if the database is away."""
    parsed = make_url(url)
    shown = parsed.render_as_string(hide_password=True)
    try:
        if parsed.get_backend_name() == "sqlite" and parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_log_engine(url)
        metadata.create_all(engine)
    except (OSError, OperationalError, InterfaceError) as error:
        cause = getattr(error, "orig", None) or error
        raise PredictionLogUnavailableError(
            f"cannot open the prediction log at {shown}: {cause}".strip()
        ) from error
    return engine


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
                self._retrying(lambda row=row: self._insert([row]))
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
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(table)
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
            "tx_datetime": _naive_utc(record.tx_datetime),
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


def _naive_utc(moment: dt.datetime) -> dt.datetime:
    """The raw data's clock is naive; an aware value is brought to UTC so both backends agree."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(dt.UTC).replace(tzinfo=None)


# --- readers for monitoring --------------------------------------------------------------

TimeColumn = Literal["logged_at", "tx_datetime"]
RowKind = Literal["served", "shadow", "all"]


def read_predictions(
    engine: Engine,
    *,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    last_n: int | None = None,
    time_column: TimeColumn = "logged_at",
    labels_received_by: dt.datetime | None = None,
    rows: RowKind = "served",
) -> pd.DataFrame:
    """A window of logged predictions, one column per feature, with the labels known by then.

    The window is ``start <= time < end`` on ``time_column`` (``logged_at`` is aware UTC;
    ``tx_datetime`` is the transaction's own naive clock, as in the raw data), optionally
    only its ``last_n`` newest rows. ``label`` is the newest label received by
    ``labels_received_by`` (all labels when None) and missing while none had arrived, so
    a performance report sees exactly the labels it could have seen at that time.
    """
    if time_column not in get_args(TimeColumn):
        raise ValueError(f"time_column must be one of {get_args(TimeColumn)}, not {time_column!r}")
    if last_n is not None and last_n < 1:
        raise ValueError("last_n must be at least 1")
    when = predictions.c[time_column]
    latest = _latest_labels(labels_received_by)
    query = select(predictions, latest.c.label, latest.c.label_received_at).outerjoin(
        latest, and_(latest.c.transaction_id == predictions.c.transaction_id, latest.c.rank == 1)
    )
    if start is not None:
        query = query.where(when >= start)
    if end is not None:
        query = query.where(when < end)
    if rows != "all":
        query = query.where(predictions.c.is_shadow.is_(rows == "shadow"))
    if last_n is None:
        query = query.order_by(when, predictions.c.id)
    else:
        query = query.order_by(when.desc(), predictions.c.id.desc()).limit(last_n)
    with engine.connect() as connection:
        records = [dict(row) for row in connection.execute(query).mappings()]
    if last_n is not None:
        records.reverse()
    return _frame(records)


def _latest_labels(received_by: dt.datetime | None) -> Subquery:
    rank = func.row_number().over(
        partition_by=labels.c.transaction_id,
        order_by=(labels.c.received_at.desc(), labels.c.id.desc()),
    )
    query = select(
        labels.c.transaction_id,
        labels.c.label,
        labels.c.received_at.label("label_received_at"),
        rank.label("rank"),
    )
    if received_by is not None:
        query = query.where(labels.c.received_at <= received_by)
    return query.subquery("latest_labels")


def _frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    features = pd.DataFrame.from_records([record.pop("features") for record in records])
    clash = {*predictions.c.keys(), "label", "label_received_at"} & set(features.columns)
    if clash:
        raise ValueError(f"feature names clash with log columns: {sorted(clash)}")
    log_columns = [*predictions.c.keys(), "label", "label_received_at"]
    log_columns.remove("features")
    frame = pd.DataFrame.from_records(records, columns=log_columns)
    frame["label"] = frame["label"].astype("Int8")
    frame["logged_at"] = pd.to_datetime(frame["logged_at"], utc=True)
    frame["label_received_at"] = pd.to_datetime(frame["label_received_at"], utc=True)
    return pd.concat([frame, features], axis=1)
