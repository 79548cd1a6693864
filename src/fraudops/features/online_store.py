"""Online feature state for serving: per-customer and per-terminal day buckets.

Public API (what serving calls)::

    store = open_online_store(settings.feature_store_url, params.features)
    features = store.score_features(Transaction(id, when, customer, terminal, amount))
    outcome = store.record_label(transaction_id, label, received_at=now)   # LabelOutcome
    store.backfill(raw)          # start mid-stream from offline data
    store.ping()                 # raises OnlineStoreUnavailable when the backend is away
    store.close()

The windows themselves live in `fraudops.features.definitions`; this module only keeps the
buckets those functions read (`CustomerBucket`, `TerminalBucket`) and a small index transaction_id →
(customer, terminal, day, amount, label). The index is what makes a repeated transaction id
count once and what tells the label path which terminal bucket a fraud belongs to.

Each call is one atomic exchange with the backend, so several worker processes can share
one store and every count stays exact:

* SQLite (default, ``sqlite:///path``): WAL, one ``BEGIN IMMEDIATE`` transaction of a few
  primary-key statements per call. No in-process cache: with several workers a cache would
  need invalidation, and the database answers in tens of microseconds anyway.
* Redis (``redis://host:port/db``): one Lua script per call (a single round trip) that reads
  both entities' buckets and increments today's. One hash per entity with a field per day.
  The label script finds the terminal from the index, so it needs a single Redis instance,
  not a cluster.

Retention follows the windows, two ways. Per entity, a call drops that customer's and
terminal's buckets that no transaction of its day or later can read (judged from the
transaction's day, capped at tomorrow, so one wrongly future-dated transaction cannot wipe
today's state; a replay of past days keeps working). And by wall-clock time: buckets and
index entries expire once no transaction dated at their last write or later can read them
(Redis key TTLs; expiry columns that SQLite sweeps), so quiet entities disappear. A replay of
historical data at high speed therefore keeps its index entries for the whole replay.
"""

from __future__ import annotations

import abc
import datetime as dt
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self
from urllib.parse import urlsplit

import polars as pl

from fraudops.config import FeatureParams
from fraudops.data.schema import (
    CUSTOMER_ID,
    EPOCH,
    TERMINAL_ID,
    TRANSACTION_ID,
    TX_AMOUNT,
    TX_DATETIME,
    TX_FRAUD,
    days_since_epoch,
)
from fraudops.features.definitions import (
    CENTS_PER_UNIT,
    Bucket,
    CustomerBucket,
    TerminalBucket,
    amount_to_cents,
    customer_bucket_days,
    day_number,
    label_known_day,
    terminal_bucket_days,
    transaction_features,
)

logger = logging.getLogger(__name__)

#: Prefix of every Redis key, so several stores can share one Redis database.
DEFAULT_NAMESPACE = "fraudops"
SQLITE_BUSY_TIMEOUT_S = 10.0
REDIS_TIMEOUT_S = 2.0
SECONDS_PER_DAY = 86_400

# --- the public types ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transaction:
    """One incoming transaction; a naive ``tx_datetime`` is UTC."""

    transaction_id: int
    tx_datetime: dt.datetime
    customer_id: int
    terminal_id: int
    tx_amount: float


class LabelOutcome(StrEnum):
    """What `OnlineStore.record_label` did; serving maps ``UNKNOWN_TRANSACTION`` to 404."""

    #: Stored: the fraud counts from the day its transaction's labels are all known.
    RECORDED = "recorded"
    #: Stored, but after that day had become readable: features served in between did not
    #: include it, so they differ from the offline features of the same transactions.
    RECORDED_LATE = "recorded_late"
    #: The same label was already stored; nothing changed.
    UNCHANGED = "unchanged"
    #: No such transaction in the index: never scored here, or expired from the index.
    UNKNOWN_TRANSACTION = "unknown_transaction"


class OnlineStoreError(RuntimeError):
    """The online store could not do what was asked."""


class OnlineStoreUnavailable(OnlineStoreError):
    """The backend (SQLite file or Redis server) cannot be reached or used."""


class TransactionConflict(OnlineStoreError):
    """A transaction id came back with a different customer, terminal, day or amount."""


@dataclass(frozen=True)
class BackfillSummary:
    """What `OnlineStore.backfill` wrote: state as of the end of ``until``."""

    until: dt.date
    transactions: int
    customer_buckets: int
    terminal_buckets: int
    indexed_transactions: int
    pending_labels: int


# --- shared logic --------------------------------------------------------------------------


class _IndexEntry(NamedTuple):
    """What the index remembers of a scored transaction; ``label`` None means not yet known."""

    customer_id: int
    terminal_id: int
    day: int
    amount_cents: int
    label: int | None


@dataclass(frozen=True, slots=True)
class _Plan:
    """The days one call reads, and from which day on buckets must be kept."""

    day: int
    customer_days: range
    terminal_days: range
    customer_keep_from: int
    terminal_keep_from: int


@dataclass(frozen=True, slots=True)
class _Fetched:
    customer: dict[int, CustomerBucket]
    terminal: dict[int, TerminalBucket]
    #: The index entry of an earlier call with the same transaction id, if any.
    previous: _IndexEntry | None


class OnlineStore(abc.ABC):
    """Day buckets per customer and terminal behind one interface; see the module docstring."""

    def __init__(self, params: FeatureParams) -> None:
        self.params = params
        #: Seconds without writes after which an entity's buckets (and an index entry of
        #: that age) can no longer be read by any transaction dated at write time or later.
        self.customer_retention_s = _retention_s(customer_bucket_days(0, params))
        self.terminal_retention_s = _retention_s(terminal_bucket_days(0, params))

    # The request path.

    def score_features(self, tx: Transaction) -> dict[str, float]:
        """The model inputs of TX, computed before TX is counted, then TX recorded.

        A repeated transaction id is not counted again: it gets the features the first call
        computed (as long as no later transaction of that customer came in between), so a
        retried request answers the same. The same id with a different customer, terminal,
        day or amount raises `TransactionConflict`.
        """
        day = day_number(tx.tx_datetime)
        entry = _IndexEntry(
            tx.customer_id, tx.terminal_id, day, amount_to_cents(tx.tx_amount), None
        )
        fetched = self._exchange(tx.transaction_id, entry, self._plan(day))
        customer = fetched.customer
        if fetched.previous is not None:
            if fetched.previous[:4] != entry[:4]:
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

        A fraud goes into its terminal's bucket of the transaction's day; windows read that
        day only once all its labels are known (`label_known_day`). Repeating a label changes
        nothing; a changed label (a correction) moves the count. RECEIVED_AT, when given,
        tells an on-time label from a late one.
        """
        if label not in (0, 1):
            raise ValueError(f"a label is 0 or 1, got {label!r}")
        previous = self._store_label(transaction_id, label)
        if previous is None:
            return LabelOutcome.UNKNOWN_TRANSACTION
        if previous.label == label:
            return LabelOutcome.UNCHANGED
        if received_at is not None and day_number(received_at) >= label_known_day(
            previous.day, self.params
        ):
            return LabelOutcome.RECORDED_LATE
        return LabelOutcome.RECORDED

    # Starting mid-stream.

    def backfill(self, raw: pl.DataFrame, until: dt.date | None = None) -> BackfillSummary:
        """Load the state serving would hold after the last transaction of day UNTIL.

        UNTIL defaults to the last day in RAW; later rows are ignored. That state has the
        buckets every later transaction can read, and the frauds whose labels are known by
        then (per `label_known_day`): newer labels are left for the feedback path, and those
        transactions are indexed with no label, so a label arriving later counts once.
        Buckets of the covered days are overwritten, so running it twice changes nothing.
        """
        state = _backfill_state(raw, self.params, until)
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
    def _exchange(self, transaction_id: int, entry: _IndexEntry, plan: _Plan) -> _Fetched:
        """Atomically: read the entity buckets and the index entry; if there is no entry,
        store ENTRY and add the transaction to today's buckets. Buckets of these two entities
        older than the plan's keep-from days may be dropped on the way."""

    @abc.abstractmethod
    def _store_label(self, transaction_id: int, label: int) -> _IndexEntry | None:
        """Atomically: set the label in the index and adjust the terminal's fraud count by
        the change; return the entry as it was before, None if unknown."""

    @abc.abstractmethod
    def _write_backfill(self, state: _BackfillState) -> None:
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

    def _plan(self, day: int) -> _Plan:
        """Which buckets DAY reads, and from which day on the entities' buckets are kept.

        Keeping is judged from DAY, but never from later than tomorrow: a transaction dated
        far in the future must not drop the buckets of today's traffic.
        """
        keep_day = min(day, day_number(dt.datetime.now(dt.UTC)) + 1)
        return _Plan(
            day=day,
            customer_days=customer_bucket_days(day, self.params),
            terminal_days=terminal_bucket_days(day, self.params),
            customer_keep_from=customer_bucket_days(keep_day, self.params).start,
            terminal_keep_from=terminal_bucket_days(keep_day, self.params).start,
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


def _retention_s(read_on_day_zero: range) -> int:
    """How long after its own day a bucket can still be read, plus a day of margin."""
    return (2 - read_on_day_zero.start) * SECONDS_PER_DAY


# --- backfill: the state as frames ---------------------------------------------------------

_DAY = "day"
_CENTS = "amount_cents"
_NB_TX = "nb_tx"
_NB_FRAUD = "nb_fraud"
_LABEL = "label"


@dataclass(frozen=True)
class _BackfillState:
    plan: _Plan
    transactions: int
    customers: pl.DataFrame  # customer_id, day, nb_tx, amount_cents
    terminals: pl.DataFrame  # terminal_id, day, nb_tx, nb_fraud
    index: pl.DataFrame  # transaction_id, customer_id, terminal_id, day, amount_cents, label

    def summary(self) -> BackfillSummary:
        return BackfillSummary(
            until=EPOCH + dt.timedelta(days=self.plan.day),
            transactions=self.transactions,
            customer_buckets=self.customers.height,
            terminal_buckets=self.terminals.height,
            indexed_transactions=self.index.height,
            pending_labels=self.index[_LABEL].null_count(),
        )


def _backfill_state(
    raw: pl.DataFrame, params: FeatureParams, until: dt.date | None
) -> _BackfillState:
    """Aggregate RAW per entity and day, keeping only what serving after UNTIL can read."""
    transactions = raw.lazy().select(
        TRANSACTION_ID,
        CUSTOMER_ID,
        TERMINAL_ID,
        pl.col(TX_DATETIME).dt.date().cast(pl.Int32).alias(_DAY),
        (pl.col(TX_AMOUNT) * CENTS_PER_UNIT).round().cast(pl.Int64).alias(_CENTS),
        pl.col(TX_FRAUD).cast(pl.Int64),
    )
    if until is None:
        last_day = transactions.select(pl.col(_DAY).max()).collect().item()
        if last_day is None:
            raise ValueError("no transactions to backfill from")
    else:
        last_day = days_since_epoch(until)
    customer_days = customer_bucket_days(last_day, params)
    terminal_days = terminal_bucket_days(last_day, params)
    plan = _Plan(last_day, customer_days, terminal_days, customer_days.start, terminal_days.start)
    # Labels of day X are known from day label_known_day(X) on.
    newest_known_day = last_day - label_known_day(0, params)
    known_fraud = pl.when(pl.col(_DAY) <= newest_known_day).then(pl.col(TX_FRAUD))
    seen = transactions.filter(pl.col(_DAY) <= last_day)
    customers = (
        seen.filter(pl.col(_DAY) >= plan.customer_keep_from)
        .group_by(CUSTOMER_ID, _DAY)
        .agg(pl.len().cast(pl.Int64).alias(_NB_TX), pl.col(_CENTS).sum())
    )
    recent = seen.filter(pl.col(_DAY) >= plan.terminal_keep_from)
    terminals = recent.group_by(TERMINAL_ID, _DAY).agg(
        pl.len().cast(pl.Int64).alias(_NB_TX),
        known_fraud.fill_null(0).sum().alias(_NB_FRAUD),
    )
    index = recent.select(
        TRANSACTION_ID, CUSTOMER_ID, TERMINAL_ID, _DAY, _CENTS, known_fraud.alias(_LABEL)
    )
    count, customers, terminals, index = pl.collect_all(
        [seen.select(pl.len()), customers, terminals, index]
    )
    if index[TRANSACTION_ID].is_duplicated().any():
        raise ValueError("raw data has repeated transaction ids")
    return _BackfillState(plan, count.item(), customers, terminals, index)


# --- SQLite --------------------------------------------------------------------------------

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS customer_buckets (
    customer_id INTEGER NOT NULL, day INTEGER NOT NULL,
    nb_tx INTEGER NOT NULL, amount_cents INTEGER NOT NULL, expires_at INTEGER NOT NULL,
    PRIMARY KEY (customer_id, day)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS customer_buckets_by_expiry ON customer_buckets (expires_at);
CREATE TABLE IF NOT EXISTS terminal_buckets (
    terminal_id INTEGER NOT NULL, day INTEGER NOT NULL,
    nb_tx INTEGER NOT NULL, nb_fraud INTEGER NOT NULL, expires_at INTEGER NOT NULL,
    PRIMARY KEY (terminal_id, day)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS terminal_buckets_by_expiry ON terminal_buckets (expires_at);
CREATE TABLE IF NOT EXISTS transactions (
    transaction_id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL,
    terminal_id INTEGER NOT NULL, day INTEGER NOT NULL, amount_cents INTEGER NOT NULL,
    label INTEGER, expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS transactions_by_expiry ON transactions (expires_at);
"""

_ADD_TRANSACTION = """
INSERT INTO transactions VALUES (?, ?, ?, ?, ?, NULL, ?) ON CONFLICT (transaction_id) DO NOTHING
"""
_READ_INDEX = """
SELECT customer_id, terminal_id, day, amount_cents, label FROM transactions
WHERE transaction_id = ?
"""
_READ_CUSTOMER = "SELECT day, nb_tx, amount_cents FROM customer_buckets WHERE customer_id = ?"
_READ_TERMINAL = "SELECT day, nb_tx, nb_fraud FROM terminal_buckets WHERE terminal_id = ?"
_COUNT_CUSTOMER = """
INSERT INTO customer_buckets VALUES (?, ?, 1, ?, ?) ON CONFLICT (customer_id, day) DO UPDATE
SET nb_tx = nb_tx + 1, amount_cents = amount_cents + excluded.amount_cents,
    expires_at = excluded.expires_at
"""
_COUNT_TERMINAL = """
INSERT INTO terminal_buckets VALUES (?, ?, 1, 0, ?) ON CONFLICT (terminal_id, day) DO UPDATE
SET nb_tx = nb_tx + 1, expires_at = excluded.expires_at
"""
_DROP_OLD = {
    "customer": "DELETE FROM customer_buckets WHERE customer_id = ? AND day < ?",
    "terminal": "DELETE FROM terminal_buckets WHERE terminal_id = ? AND day < ?",
}
_SET_LABEL = "UPDATE transactions SET label = ? WHERE transaction_id = ?"
_COUNT_FRAUD = """
UPDATE terminal_buckets SET nb_fraud = nb_fraud + ? WHERE terminal_id = ? AND day = ?
"""
_SWEEP = tuple(
    f"DELETE FROM {table} WHERE expires_at < ?"
    for table in ("customer_buckets", "terminal_buckets", "transactions")
)
_BACKFILL = {
    "customers": """
        INSERT INTO customer_buckets VALUES (?, ?, ?, ?, ?) ON CONFLICT (customer_id, day)
        DO UPDATE SET nb_tx = excluded.nb_tx, amount_cents = excluded.amount_cents,
        expires_at = excluded.expires_at""",
    "terminals": """
        INSERT INTO terminal_buckets VALUES (?, ?, ?, ?, ?) ON CONFLICT (terminal_id, day)
        DO UPDATE SET nb_tx = excluded.nb_tx, nb_fraud = excluded.nb_fraud,
        expires_at = excluded.expires_at""",
    "index": "INSERT OR REPLACE INTO transactions VALUES (?, ?, ?, ?, ?, ?, ?)",
}
#: How often each process deletes expired rows (quiet entities, old index entries).
SQLITE_SWEEP_INTERVAL_S = 60.0
#: How often the store's own thread copies the write-ahead log into the database file.
SQLITE_CHECKPOINT_INTERVAL_S = 1.0


class SqliteOnlineStore(OnlineStore):
    """The buckets in one SQLite file (WAL); several processes may open the same file.

    One connection per store, guarded by a lock: every call writes, and SQLite admits one
    writer at a time anyway, so more connections in one process would only queue. Rows carry
    an expiry time, as Redis keys do, and each process sweeps expired rows once a minute.

    SQLite's automatic checkpoint runs inside the commit that crosses the WAL size limit,
    every few hundred requests, and costs that request milliseconds (it writes and syncs the
    database file). Here it is off, and a thread with its own connection checkpoints every
    second instead (PASSIVE: it never blocks a writer).
    """

    def __init__(self, path: Path, params: FeatureParams) -> None:
        super().__init__(params)
        self.path = path
        self._lock = threading.Lock()
        self._next_sweep = 0.0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, timeout=SQLITE_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            # With WAL, NORMAL loses at most the last commits on power loss, never consistency.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._db.executescript(_SQLITE_SCHEMA)
        except (OSError, sqlite3.Error) as error:
            raise OnlineStoreUnavailable(
                f"cannot open the online store at {path}: {error}"
            ) from error
        self._closing = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_forever, name="online-store-checkpoint", daemon=True
        )
        self._checkpointer.start()

    def ping(self) -> None:
        with self._transaction("BEGIN") as db:
            db.execute("SELECT 1 FROM transactions LIMIT 1").fetchall()

    def close(self) -> None:
        self._closing.set()
        self._checkpointer.join()
        with self._lock:
            self._db.close()

    def _checkpoint_forever(self) -> None:
        db = sqlite3.connect(self.path, timeout=SQLITE_BUSY_TIMEOUT_S, isolation_level=None)
        try:
            while not self._closing.wait(SQLITE_CHECKPOINT_INTERVAL_S):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as error:  # the next round tries again
                    logger.warning("online store %s: checkpoint failed: %s", self.path, error)
        finally:
            db.close()

    @contextmanager
    def _transaction(self, begin: str = "BEGIN IMMEDIATE") -> Iterator[sqlite3.Connection]:
        """One transaction under the lock; IMMEDIATE takes the write lock up front, so two
        processes never deadlock upgrading from read to write."""
        with self._lock:
            try:
                self._db.execute(begin)
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as error:
                raise OnlineStoreUnavailable(f"online store {self.path}: {error}") from error

    def _exchange(self, transaction_id: int, entry: _IndexEntry, plan: _Plan) -> _Fetched:
        customer_id, terminal_id, day, cents, _ = entry
        now = time.time()
        customer_expiry = int(now) + self.customer_retention_s
        terminal_expiry = int(now) + self.terminal_retention_s
        with self._transaction() as db:
            added = db.execute(
                _ADD_TRANSACTION, (transaction_id, *entry[:4], terminal_expiry)
            ).rowcount
            previous = None
            if not added:
                previous = _IndexEntry(*db.execute(_READ_INDEX, (transaction_id,)).fetchone())
            customer = {
                d: CustomerBucket(n, a) for d, n, a in db.execute(_READ_CUSTOMER, (customer_id,))
            }
            terminal = {
                d: TerminalBucket(n, f) for d, n, f in db.execute(_READ_TERMINAL, (terminal_id,))
            }
            if added:
                db.execute(_COUNT_CUSTOMER, (customer_id, day, cents, customer_expiry))
                db.execute(_COUNT_TERMINAL, (terminal_id, day, terminal_expiry))
            if min(customer, default=day) < plan.customer_keep_from:
                db.execute(_DROP_OLD["customer"], (customer_id, plan.customer_keep_from))
            if min(terminal, default=day) < plan.terminal_keep_from:
                db.execute(_DROP_OLD["terminal"], (terminal_id, plan.terminal_keep_from))
            if now >= self._next_sweep:
                self._sweep(db, now)
        return _Fetched(customer, terminal, previous)

    def _sweep(self, db: sqlite3.Connection, now: float) -> None:
        for statement in _SWEEP:
            db.execute(statement, (int(now),))
        self._next_sweep = now + SQLITE_SWEEP_INTERVAL_S

    def _store_label(self, transaction_id: int, label: int) -> _IndexEntry | None:
        with self._transaction() as db:
            row = db.execute(_READ_INDEX, (transaction_id,)).fetchone()
            if row is None:
                return None
            previous = _IndexEntry(*row)
            if previous.label != label:
                change = label - (previous.label or 0)
                if change:
                    db.execute(_COUNT_FRAUD, (change, previous.terminal_id, previous.day))
                db.execute(_SET_LABEL, (label, transaction_id))
        return previous

    def _write_backfill(self, state: _BackfillState) -> None:
        now = int(time.time())
        customer_expiry = pl.lit(now + self.customer_retention_s, dtype=pl.Int64)
        terminal_expiry = pl.lit(now + self.terminal_retention_s, dtype=pl.Int64)
        customers = state.customers.select(CUSTOMER_ID, _DAY, _NB_TX, _CENTS, customer_expiry)
        terminals = state.terminals.select(TERMINAL_ID, _DAY, _NB_TX, _NB_FRAUD, terminal_expiry)
        index = state.index.with_columns(terminal_expiry)
        with self._transaction() as db:
            db.executemany(_BACKFILL["customers"], customers.iter_rows())
            db.executemany(_BACKFILL["terminals"], terminals.iter_rows())
            db.executemany(_BACKFILL["index"], index.iter_rows())


# --- Redis ---------------------------------------------------------------------------------

# An entity's hash has one field per day: the day number, with the value "count value"
# (customers: transactions and cents; terminals: transactions and frauds).
_UNKNOWN_LABEL = "-"

_SCORE_SCRIPT = """
local function add(key, day, amount)
  local count, value = 0, 0
  local old = redis.call('HGET', key, day)
  if old then
    local a, b = string.match(old, '^(%S+) (%S+)$')
    count, value = tonumber(a), tonumber(b)
  end
  redis.call('HSET', key, day, string.format('%d %d', count + 1, value + amount))
end
local function prune(key, keep_from, most)
  if redis.call('HLEN', key) <= most then return end
  for _, day in ipairs(redis.call('HKEYS', key)) do
    if tonumber(day) < keep_from then redis.call('HDEL', key, day) end
  end
end
local previous = redis.call('GET', KEYS[3])
local customer = table.concat(redis.call('HGETALL', KEYS[1]), ' ')
local terminal = table.concat(redis.call('HGETALL', KEYS[2]), ' ')
if previous then return {previous, customer, terminal} end
redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[7])
add(KEYS[1], ARGV[1], tonumber(ARGV[2]))
add(KEYS[2], ARGV[1], 0)
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[7])
prune(KEYS[1], tonumber(ARGV[4]), tonumber(ARGV[8]))
prune(KEYS[2], tonumber(ARGV[5]), tonumber(ARGV[9]))
return {false, customer, terminal}
"""
"""KEYS: customer hash, terminal hash, index entry. ARGV: day, cents, new index entry,
customer/terminal keep-from days, customer/terminal TTLs (s), customer/terminal field counts
above which to prune. Returns the old index entry (or nil) and both hashes, as they were."""

_LABEL_SCRIPT = """
local entry = redis.call('GET', KEYS[1])
if not entry then return false end
local customer, terminal, day, cents, label = string.match(entry, '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
if label == ARGV[1] then return entry end
local change = tonumber(ARGV[1]) - (tonumber(label) or 0)
local key = ARGV[2] .. terminal
local bucket = redis.call('HGET', key, day)
if change ~= 0 and bucket then
  local count, frauds = string.match(bucket, '^(%S+) (%S+)$')
  redis.call('HSET', key, day, string.format('%d %d', tonumber(count), tonumber(frauds) + change))
end
redis.call('SET', KEYS[1], table.concat({customer, terminal, day, cents, ARGV[1]}, ' '), 'KEEPTTL')
return entry
"""
"""KEYS: index entry. ARGV: label, terminal key prefix. Returns the old entry (or nil)."""

_BACKFILL_BATCH = 5_000


def _encode_entry(entry: _IndexEntry) -> str:
    label = _UNKNOWN_LABEL if entry.label is None else str(entry.label)
    return " ".join(map(str, entry[:4])) + f" {label}"


def _decode_entry(raw: bytes) -> _IndexEntry:
    customer, terminal, day, cents, label = raw.decode().split(" ")
    return _IndexEntry(
        int(customer),
        int(terminal),
        int(day),
        int(cents),
        None if label == _UNKNOWN_LABEL else int(label),
    )


def _buckets(packed: bytes, make: type[Bucket]) -> dict[int, Bucket]:
    """Buckets from the script's "day count value day count value …" answer.

    The script sends a whole hash as one string: parsing a long reply array in Python costs
    more than the round trip. Days outside the windows come along; the feature functions
    read only their own days.
    """
    numbers = list(map(int, packed.split()))
    return {numbers[i]: make(numbers[i + 1], numbers[i + 2]) for i in range(0, len(numbers), 3)}


class RedisOnlineStore(OnlineStore):
    """The buckets in Redis: a hash per customer and per terminal, a string per transaction."""

    def __init__(self, url: str, params: FeatureParams, namespace: str = DEFAULT_NAMESPACE) -> None:
        import redis

        super().__init__(params)
        self.url = url
        self.namespace = namespace
        self._errors = (redis.exceptions.RedisError, OSError)
        self._client = redis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
        )
        self._score = self._client.register_script(_SCORE_SCRIPT)
        self._label = self._client.register_script(_LABEL_SCRIPT)

    def key(self, kind: str, entity_id: int | str) -> str:
        """The Redis key of a customer (``c``), terminal (``t``) or transaction (``x``)."""
        return f"{self.namespace}:{kind}:{entity_id}"

    def ping(self) -> None:
        with self._reachable():
            self._client.ping()

    def close(self) -> None:
        self._client.close()

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        try:
            yield
        except self._errors as error:
            raise OnlineStoreUnavailable(f"online store {self.url}: {error}") from error

    def _exchange(self, transaction_id: int, entry: _IndexEntry, plan: _Plan) -> _Fetched:
        keys = [
            self.key("c", entry.customer_id),
            self.key("t", entry.terminal_id),
            self.key("x", transaction_id),
        ]
        args = [
            entry.day,
            entry.amount_cents,
            _encode_entry(entry),
            plan.customer_keep_from,
            plan.terminal_keep_from,
            self.customer_retention_s,
            self.terminal_retention_s,
            # Prune a hash once it holds twice the days it needs: amortised O(1) per call.
            2 * len(plan.customer_days),
            2 * len(plan.terminal_days),
        ]
        with self._reachable():
            previous, customer, terminal = self._score(keys=keys, args=args)
        return _Fetched(
            _buckets(customer, CustomerBucket),
            _buckets(terminal, TerminalBucket),
            None if previous is None else _decode_entry(previous),
        )

    def _store_label(self, transaction_id: int, label: int) -> _IndexEntry | None:
        with self._reachable():
            previous = self._label(
                keys=[self.key("x", transaction_id)], args=[label, self.key("t", "")]
            )
        return None if previous is None else _decode_entry(previous)

    def _write_backfill(self, state: _BackfillState) -> None:
        customer_ttl, terminal_ttl = self.customer_retention_s, self.terminal_retention_s
        index = (
            (
                "SET",
                self.key("x", row[0]),
                _encode_entry(_IndexEntry(*row[1:])),
                "EX",
                terminal_ttl,
            )
            for row in state.index.iter_rows()
        )
        with self._reachable():
            self._send(self._hash_commands("c", state.customers, CUSTOMER_ID, _CENTS, customer_ttl))
            self._send(
                self._hash_commands("t", state.terminals, TERMINAL_ID, _NB_FRAUD, terminal_ttl)
            )
            self._send(index)

    def _hash_commands(
        self, kind: str, buckets: pl.DataFrame, entity: str, value: str, ttl: int
    ) -> Iterator[tuple[Any, ...]]:
        """Per entity, one HSET of all its day fields, then its expiry."""
        fields = (
            buckets.select(
                entity,
                pl.concat_list(
                    pl.col(_DAY).cast(pl.String), pl.format("{} {}", _NB_TX, value)
                ).alias("fields"),
            )
            .group_by(entity)
            .agg(pl.col("fields").list.explode(keep_nulls=False, empty_as_null=False))
        )
        for entity_id, values in fields.iter_rows():
            key = self.key(kind, entity_id)
            yield ("HSET", key, *values)
            yield ("EXPIRE", key, ttl)

    def _send(self, commands: Iterable[tuple[Any, ...]]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for count, command in enumerate(commands, start=1):
            pipe.execute_command(*command)
            if count % _BACKFILL_BATCH == 0:
                pipe.execute()
        pipe.execute()


# --- choosing a backend --------------------------------------------------------------------


def open_online_store(
    url: str, params: FeatureParams, *, namespace: str = DEFAULT_NAMESPACE
) -> OnlineStore:
    """The store at URL: ``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or
    ``redis://host:port/db``. NAMESPACE prefixes Redis keys (ignored by SQLite)."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        path = url.removeprefix("sqlite:///")
        if not path or path == ":memory:":
            raise ValueError("the SQLite online store needs a file shared by all workers")
        return SqliteOnlineStore(Path(path), params)
    if scheme in ("redis", "rediss", "unix"):
        return RedisOnlineStore(url, params, namespace)
    raise ValueError(f"unsupported online store URL {url!r}: use sqlite:///… or redis://…")
