"""Live traffic for the loop: simulated days replayed through the scoring API.

The replay continues the training data: the days after the newest day in ``data/raw`` (or
in the journal of an earlier replay), drawn by the same simulator with the same seed, so
the customers and terminals are the ones the model knows while their activity is new, and
an optional drift scenario changes it. Time is compressed: a simulated day takes
``seconds_per_day`` of wall time at most ``rate`` transactions a second, and the fraud
label of each transaction is posted through ``/v1/feedback`` at the hour it becomes usable
(the label delay after the transaction, to the hour), before any transaction that may read
it is sent: the one rule the offline features, the online store and the split follow
(``fraudops.features.label_timing``). So labels arrive in hourly batches of simulated time.

The replay records every transaction the API scored in a journal
(`fraudops.logs.journal`). A replay may stop before its last labels are due
(``drain_labels=False``: the compose stack's ``traffic`` service replays a few days at a
time and starts again where it stopped); the next replay into the same journal first
posts the labels still owed, each at its hour, so a label is never lost between two runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl

from fraudops.config import Scenario, SimulateParams
from fraudops.data.datasets import write_raw
from fraudops.data.schema import (
    CUSTOMER_ID,
    TERMINAL_ID,
    TRANSACTION_ID,
    TX_AMOUNT,
    TX_DATETIME,
    TX_FRAUD,
)
from fraudops.data.simulate import simulate
from fraudops.features.label_timing import LabelTiming
from fraudops.logs.journal import PendingLabel, label_clock_file, owed_labels

#: Transactions per ``POST /v1/score/batch`` (the API's own maximum).
BATCH_SIZE = 100
#: Labels posted at the same time.
LABEL_CONCURRENCY = 8
#: Tries of a request that is safe to repeat when its connection fails.
TRANSPORT_ATTEMPTS = 3
REQUEST_TIMEOUT_S = 30.0


def following_days(
    params: SimulateParams, start: dt.date, days: int, scenario: Scenario
) -> pl.DataFrame:
    """DAYS simulated days from START: the training population, new activity, SCENARIO."""
    return simulate(params.model_copy(update={"start": start, "days": days, "scenario": scenario}))


@dataclass(frozen=True)
class ReplayConfig:
    """How fast the replay goes and when labels arrive, in compressed time."""

    base_url: str
    rate: float = 0.0  # transactions per second; 0: as fast as the API answers
    seconds_per_day: float = 1.0
    label_delay_days: int = 7  # params.features.label_delay_days
    drain_labels: bool = True  # after the last day, run the clock on until every label is in
    batch_size: int = BATCH_SIZE

    @property
    def label_timing(self) -> LabelTiming:
        """When each label is posted: once it is usable under the project's one rule."""
        return LabelTiming.after_days(self.label_delay_days)


@dataclass
class ReplayStats:
    """What the replay did; ``failed`` counts transactions the API did not score."""

    days: int = 0
    sent: int = 0
    scored: int = 0
    failed: int = 0
    labels_posted: int = 0
    labels_failed: int = 0
    errors: list[str] = field(default_factory=list)


#: Called with the number of transactions sent so far.
ProgressHook = Callable[[int], None]
#: Called at the end of each simulated day, off the event loop (it may block).
DayHook = Callable[[dt.date], None]


def replay(
    transactions: pl.DataFrame,
    config: ReplayConfig,
    *,
    journal: Path | None = None,
    on_progress: ProgressHook | None = None,
    on_day_end: DayHook | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> ReplayStats:
    """Send TRANSACTIONS day by day in time order; post each label once it is usable.

    TRANSPORT replaces the network (tests record what the replay sends, and when).
    """
    run = _Replay(config, journal, on_progress, on_day_end, transport).run(transactions)
    return asyncio.run(run)


def batch_bounds(times: pl.Series, due: list[dt.datetime], size: int) -> list[tuple[int, int]]:
    """Row ranges [start, stop) of TIMES (sorted) to send as one batch each: at most SIZE rows,
    and no label of DUE falls due after a batch's first row and by its last, so every label
    can be posted before the first transaction that may read it."""
    due_times = np.array(sorted(due), dtype="datetime64[us]")
    due_by = np.searchsorted(due_times, times.to_numpy().astype("datetime64[us]"), side="right")
    bounds, start = [], 0
    for row in range(1, len(times) + 1):
        if row == len(times) or row - start == size or due_by[row] != due_by[start]:
            bounds.append((start, row))
            start = row
    return bounds


class _Replay:
    def __init__(
        self,
        config: ReplayConfig,
        journal: Path | None,
        on_progress: ProgressHook | None,
        on_day_end: DayHook | None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.journal = journal
        self.on_progress = on_progress or (lambda _sent: None)
        self.on_day_end = on_day_end
        self.transport = transport
        self.stats = ReplayStats()
        self.timing = config.label_timing
        #: (when the label is usable, transaction id, label), earliest first: those an
        #: earlier replay into the journal still owed, then this replay's own.
        self.pending_labels: list[PendingLabel] = (
            [] if journal is None else owed_labels(journal, self.timing)
        )

    async def run(self, transactions: pl.DataFrame) -> ReplayStats:
        ordered = transactions.sort(TX_DATETIME, TRANSACTION_ID)
        by_day = ordered.with_columns(pl.col(TX_DATETIME).dt.date().alias("_date"))
        days = by_day.partition_by("_date", as_dict=True, include_key=False)
        async with httpx.AsyncClient(
            base_url=self.config.base_url, timeout=REQUEST_TIMEOUT_S, transport=self.transport
        ) as client:
            self.client = client
            day = None
            for (day,), rows in sorted(days.items()):
                await self._clocked(self._day(day, rows))
            if day is not None and self.config.drain_labels:
                while self.pending_labels:
                    day += dt.timedelta(days=1)
                    await self._clocked(self._post_labels_due(_end_of(day)))
                    self._labels_posted_until(_end_of(day))
        return self.stats

    def _labels_posted_until(self, moment: dt.datetime) -> None:
        """Record that every label usable by MOMENT was posted (written whole, then renamed)."""
        if self.journal is None:
            return
        clock_file = label_clock_file(self.journal)
        clock_file.parent.mkdir(parents=True, exist_ok=True)
        partial = clock_file.with_suffix(".partial")
        partial.write_text(moment.isoformat() + "\n")
        partial.replace(clock_file)

    async def _clocked(self, work: Awaitable[None]) -> None:
        """Run one simulated day's work; the day lasts at least ``seconds_per_day``."""
        started = time.monotonic()
        await work
        rest = self.config.seconds_per_day - (time.monotonic() - started)
        if rest > 0:
            await asyncio.sleep(rest)

    async def _day(self, day: dt.date, rows: pl.DataFrame) -> None:
        await self._post_labels_due(dt.datetime.combine(day, dt.time()))
        scored = await self._send(rows)
        if self.journal is not None and not scored.is_empty():
            write_raw(scored, self.journal, overwrite=True)
        for when, transaction_id, label in scored.select(
            TX_DATETIME, TRANSACTION_ID, TX_FRAUD
        ).iter_rows():
            entry = (self.timing.usable_from(when), transaction_id, label)
            heapq.heappush(self.pending_labels, entry)
        # The day ends at the next midnight: the labels usable then are in before its hook
        # runs, so a day whose last label is usable at midnight counts as complete.
        await self._post_labels_due(_end_of(day))
        self._labels_posted_until(_end_of(day))
        self.stats.days += 1
        if self.on_day_end is not None:
            await asyncio.to_thread(self.on_day_end, day)

    async def _send(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Score ROWS in order, batch by batch, at the configured rate; the scored rows.

        Before each batch, the labels usable by its first transaction are posted; a batch
        never spans the hour a pending label becomes usable (`batch_bounds`).
        """
        scored_ids: list[int] = []
        started, sent_before = time.monotonic(), self.stats.sent
        due = [entry[0] for entry in self.pending_labels]
        for start, stop in batch_bounds(rows[TX_DATETIME], due, self.config.batch_size):
            batch = rows.slice(start, stop - start)
            await self._post_labels_due(batch[TX_DATETIME][0])
            body = {"transactions": [payload(row) for row in batch.iter_rows(named=True)]}
            try:
                response = await self.client.post("/v1/score/batch", json=body)
            except httpx.HTTPError as error:
                response = None
                self._error(f"score batch: {error!r}")
            if response is not None and response.status_code == 200:
                scored_ids += [result["transaction_id"] for result in response.json()["results"]]
            elif response is not None:
                self._error(f"score batch: HTTP {response.status_code} {response.text[:200]}")
            self.stats.sent += batch.height
            self.on_progress(self.stats.sent)
            await self._throttle(started, self.stats.sent - sent_before)
        self.stats.scored += len(scored_ids)
        self.stats.failed += rows.height - len(scored_ids)
        return rows.filter(pl.col(TRANSACTION_ID).is_in(scored_ids))

    async def _throttle(self, started: float, sent: int) -> None:
        if self.config.rate > 0:
            ahead = sent / self.config.rate - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)

    async def _post_labels_due(self, now: dt.datetime) -> None:
        """Post every pending label usable at NOW (simulated time), earliest first."""
        due = []
        while self.pending_labels and self.pending_labels[0][0] <= now:
            _, transaction_id, label = heapq.heappop(self.pending_labels)
            due.append((transaction_id, label))
        if due:
            await self._post_labels(due)

    async def _post_idempotent(self, path: str, body: dict[str, int]) -> httpx.Response:
        """POST that a lost connection may repeat: the server stores a label once, however
        often it arrives, and a keep-alive connection can close under a request."""
        for _ in range(TRANSPORT_ATTEMPTS - 1):
            try:
                return await self.client.post(path, json=body)
            except httpx.TransportError:
                continue
        return await self.client.post(path, json=body)

    async def _post_labels(self, labels: Iterable[tuple[int, int]]) -> None:
        limit = asyncio.Semaphore(LABEL_CONCURRENCY)

        async def post(transaction_id: int, label: int) -> None:
            body = {"transaction_id": transaction_id, "label": label}
            async with limit:
                try:
                    response = await self._post_idempotent("/v1/feedback", body)
                except httpx.HTTPError as error:
                    self.stats.labels_failed += 1
                    self._error(f"feedback: {error!r}")
                    return
            if response.status_code == 200:
                self.stats.labels_posted += 1
            else:
                self.stats.labels_failed += 1
                self._error(f"feedback: HTTP {response.status_code} {response.text[:200]}")

        await asyncio.gather(*(post(int(tx), int(label)) for tx, label in labels))

    def _error(self, message: str) -> None:
        """Keep the first few errors for the summary; the counters hold the totals."""
        if len(self.stats.errors) < 10:
            self.stats.errors.append(message)


def _end_of(day: dt.date) -> dt.datetime:
    """The moment day DAY ends: midnight, the start of the next day."""
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time())


def payload(row: dict[str, Any]) -> dict[str, Any]:
    """A raw transaction as ``POST /v1/score`` takes it."""
    return {
        "transaction_id": int(row[TRANSACTION_ID]),
        "timestamp": row[TX_DATETIME].isoformat(),
        "customer_id": int(row[CUSTOMER_ID]),
        "terminal_id": int(row[TERMINAL_ID]),
        "amount": float(row[TX_AMOUNT]),
    }
