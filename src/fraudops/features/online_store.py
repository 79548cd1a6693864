"""Online feature state for serving: per-customer day buckets, per-terminal label-tick buckets.

Public API (what serving calls)::

    store = open_online_store(settings.feature_store_url, params.features)
    features = store.score_features(Transaction(id, when, customer, terminal, amount))
    outcome = store.record_label(transaction_id, label, received_at=now)   # LabelOutcome
    store.backfill(raw)          # start mid-stream from offline data
    store.ping()                 # raises OnlineStoreUnavailable when the backend is away
    store.close()

This module is the interface and the logic every backend shares; the types it passes live in
`fraudops.features.store_types`, the backends in `fraudops.features.sqlite_store` and
`fraudops.features.redis_store`, the offline starting state in `fraudops.features.backfill`.

The windows themselves live in `fraudops.features.definitions`; the store only keeps the
buckets those functions read (`CustomerBucket` per day, `TerminalBucket` per label tick: the
hour its transactions' labels become usable, `fraudops.features.label_timing`) and a small
index transaction_id → (customer, terminal, day, label tick, amount, label). The index is
what makes a repeated transaction id count once and what tells the label path which terminal
bucket a fraud belongs to.

Each call is one atomic exchange with the backend, so several worker processes can share
one store and every count stays exact: SQLite (default, ``sqlite:///path``) runs one
transaction per call, Redis (``redis://host:port/db``) one Lua script per call.

Retention follows the windows, two ways. Per entity, a call drops that customer's and
terminal's buckets that no transaction of its day or later can read (judged from the
transaction's time, capped at tomorrow, so one wrongly future-dated transaction cannot wipe
today's state; a replay of past days keeps working). And by wall-clock time: buckets and
index entries expire once no transaction dated at their last write or later can read them
(Redis key TTLs; expiry columns that SQLite sweeps), so quiet entities disappear. A replay of
historical data at high speed therefore keeps its index entries for the whole replay.
"""

from __future__ import annotations

import abc
import datetime as dt
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

import polars as pl

from fraudops.config import FeatureParams
from fraudops.features.backfill import BackfillState, backfill_state
from fraudops.features.definitions import (
    CustomerBucket,
    amount_to_cents,
    customer_bucket_days,
    day_number,
    terminal_bucket_ticks,
    transaction_features,
)
from fraudops.features.label_timing import LabelTiming, label_timing
from fraudops.features.store_types import (
    DEFAULT_NAMESPACE,
    BackfillSummary,
    BucketPlan,
    Fetched,
    IndexEntry,
    LabelOutcome,
    Transaction,
    TransactionConflict,
)

SECONDS_PER_DAY = 86_400


class OnlineStore(abc.ABC):
    """Customer and terminal buckets behind one interface; see the module docstring."""

    def __init__(self, params: FeatureParams) -> None:
        self.params = params
        #: The label timing rule every terminal bucket follows.
        self.timing: LabelTiming = label_timing(params)
        #: Seconds without writes after which an entity's buckets (and an index entry of
        #: that age) can no longer be read by any transaction dated at write time or later.
        self.customer_retention_s = _retention_s(len(customer_bucket_days(0, params)))
        terminal_reach = self.timing.delay_ticks + len(terminal_bucket_ticks(0, params))
        self.terminal_retention_s = _retention_s(terminal_reach // self.timing.ticks_per_day)

    # The request path.

    def score_features(self, tx: Transaction) -> dict[str, float]:
        """The model inputs of TX, computed before TX is counted, then TX recorded.

        A repeated transaction id is not counted again: it gets the features the first call
        computed (as long as no later transaction of that customer came in between), so a
        retried request answers the same. The same id with a different customer, terminal,
        amount, day or label tick (its time to the hour) raises `TransactionConflict`.
        """
        day = day_number(tx.tx_datetime)
        key = self.timing.usable_tick(tx.tx_datetime)  # = terminal_bucket_key
        cents = amount_to_cents(tx.tx_amount)
        entry = IndexEntry(tx.customer_id, tx.terminal_id, day, key, cents, None)
        fetched = self._exchange(tx.transaction_id, entry, self._plan(tx.tx_datetime))
        customer = fetched.customer
        if fetched.previous is not None:
            if fetched.previous[:5] != entry[:5]:
                raise TransactionConflict(
                    f"transaction {tx.transaction_id} was scored before with other data"
                )
            customer = _without_own_transaction(customer, day, entry.amount_cents)
        return transaction_features(
            tx.tx_datetime, tx.tx_amount, customer, fetched.terminal, self.params
        )

    def record_label(
        self, transaction_id: int, label: int, received_at: dt.datetime | None = None
    ) -> LabelOutcome:
        """Store the fraud label (0 or 1) of a scored transaction.

        A fraud goes into its terminal's bucket of the tick its label becomes usable; windows
        read that bucket only from then on (`fraudops.features.label_timing`). Repeating a
        label changes nothing; a changed label (a correction) moves the count. RECEIVED_AT,
        when given, tells an on-time label from a late one: late is already usable then.
        """
        if label not in (0, 1):
            raise ValueError(f"a label is 0 or 1, got {label!r}")
        previous = self._store_label(transaction_id, label)
        if previous is None:
            return LabelOutcome.UNKNOWN_TRANSACTION
        if previous.label == label:
            return LabelOutcome.UNCHANGED
        if received_at is not None and self.timing.tick(received_at) >= previous.usable_tick:
            return LabelOutcome.RECORDED_LATE
        return LabelOutcome.RECORDED

    # Starting mid-stream.

    def backfill(self, raw: pl.DataFrame, until: dt.date | None = None) -> BackfillSummary:
        """Load the state serving would hold after the last transaction of day UNTIL.

        UNTIL defaults to the last day in RAW; later rows are ignored. That state has the
        buckets every later transaction can read, and the frauds whose labels are usable
        before the end of UNTIL (`fraudops.features.label_timing`): later labels are left for
        the feedback path, and those transactions are indexed with no label, so a label
        arriving later counts once.
        Buckets of the covered days are overwritten, so running it twice changes nothing.
        """
        state = backfill_state(raw, self.params, until)
        self._write_backfill(state)
        return state.summary()

    # Backend duties.

    @abc.abstractmethod
    def ping(self) -> None:
        """Check the backend answers; raise `OnlineStoreUnavailable` when it does not."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""

    @abc.abstractmethod
    def _exchange(self, transaction_id: int, entry: IndexEntry, plan: BucketPlan) -> Fetched:
        """Atomically: read the entity buckets and the index entry; if there is no entry,
        store ENTRY and add the transaction to today's buckets. Buckets of these two entities
        older than the plan's keep-from days may be dropped on the way."""

    @abc.abstractmethod
    def _store_label(self, transaction_id: int, label: int) -> IndexEntry | None:
        """Atomically: set the label in the index and adjust the terminal's fraud count by
        the change; return the entry as it was before, None if unknown."""

    @abc.abstractmethod
    def _write_backfill(self, state: BackfillState) -> None:
        """Write the state's buckets and index entries, replacing those of the same keys."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _plan(self, when: dt.datetime) -> BucketPlan:
        """Which buckets a transaction at WHEN reads, and from which keys buckets are kept.

        Keeping is judged from WHEN, but never from later than tomorrow: a transaction dated
        far in the future must not drop the buckets of today's traffic.
        """
        day, tick = day_number(when), self.timing.tick(when)
        tomorrow = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
        keep_day, keep_tick = min(day, day_number(tomorrow)), min(tick, self.timing.tick(tomorrow))
        return BucketPlan(
            day=day,
            customer_days=customer_bucket_days(day, self.params),
            terminal_ticks=terminal_bucket_ticks(tick, self.params),
            customer_keep_from=customer_bucket_days(keep_day, self.params).start,
            terminal_keep_from=terminal_bucket_ticks(keep_tick, self.params).start,
        )


def _without_own_transaction(
    buckets: dict[int, CustomerBucket], day: int, amount_cents: int
) -> dict[int, CustomerBucket]:
    """The customer's buckets as if the repeated transaction had not been recorded yet."""
    today = buckets.get(day)
    if today is None or today.nb_tx == 0:
        return buckets
    rest = CustomerBucket(today.nb_tx - 1, today.amount_cents - amount_cents)
    return {**buckets, day: rest}


def _retention_s(read_for_days: int) -> int:
    """How long after its last write a bucket can still be read, plus a day of margin."""
    return (read_for_days + 1) * SECONDS_PER_DAY


def open_online_store(
    url: str, params: FeatureParams, *, namespace: str = DEFAULT_NAMESPACE
) -> OnlineStore:
    """The store at URL: ``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or
    ``redis://host:port/db``. NAMESPACE prefixes Redis keys (ignored by SQLite).

    The backends are imported here rather than at the top: they subclass `OnlineStore`, so
    importing them before it is defined would be circular."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        path = url.removeprefix("sqlite:///")
        if not path or path == ":memory:":
            raise ValueError("the SQLite online store needs a file shared by all workers")
        from fraudops.features.sqlite_store import SqliteOnlineStore

        return SqliteOnlineStore(Path(path), params)
    if scheme in ("redis", "rediss", "unix"):
        from fraudops.features.redis_store import RedisOnlineStore

        return RedisOnlineStore(url, params, namespace)
    raise ValueError(f"unsupported online store URL {url!r}: use sqlite:///… or redis://…")
