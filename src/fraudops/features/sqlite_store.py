"""The online store in one SQLite file: the default backend, shared by every worker process.

``sqlite:///path``: WAL, one ``BEGIN IMMEDIATE`` transaction of a few primary-key statements
per call. No in-process cache: with several workers a cache would need invalidation, and the
database answers in tens of microseconds anyway. The schema and statements sit beside the
class that runs them, so a change to either is read in one place; the behaviour every
backend shares is in `fraudops.features.online_store`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from fraudops.config import FeatureParams
from fraudops.data.schema import CUSTOMER_ID, TERMINAL_ID
from fraudops.features.backfill import (
    CENTS,
    DAY,
    NB_FRAUD,
    NB_TX,
    USABLE_TICK,
    BackfillState,
)
from fraudops.features.definitions import CustomerBucket, TerminalBucket
from fraudops.features.online_store import OnlineStore
from fraudops.features.store_types import (
    BucketPlan,
    Fetched,
    IndexEntry,
    OnlineStoreUnavailable,
)

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_S = 10.0

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS customer_buckets (
    customer_id INTEGER NOT NULL, day INTEGER NOT NULL,
    nb_tx INTEGER NOT NULL, amount_cents INTEGER NOT NULL, expires_at INTEGER NOT NULL,
    PRIMARY KEY (customer_id, day)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS customer_buckets_by_expiry ON customer_buckets (expires_at);
CREATE TABLE IF NOT EXISTS terminal_buckets (
    terminal_id INTEGER NOT NULL, usable_tick INTEGER NOT NULL,
    nb_tx INTEGER NOT NULL, nb_fraud INTEGER NOT NULL, expires_at INTEGER NOT NULL,
    PRIMARY KEY (terminal_id, usable_tick)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS terminal_buckets_by_expiry ON terminal_buckets (expires_at);
CREATE TABLE IF NOT EXISTS transactions (
    transaction_id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL,
    terminal_id INTEGER NOT NULL, day INTEGER NOT NULL, usable_tick INTEGER NOT NULL,
    amount_cents INTEGER NOT NULL, label INTEGER, expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS transactions_by_expiry ON transactions (expires_at);
"""

_ADD_TRANSACTION = """
INSERT INTO transactions VALUES (?, ?, ?, ?, ?, ?, NULL, ?) ON CONFLICT (transaction_id)
DO NOTHING
"""
_READ_INDEX = """
SELECT customer_id, terminal_id, day, usable_tick, amount_cents, label FROM transactions
WHERE transaction_id = ?
"""
_READ_CUSTOMER = "SELECT day, nb_tx, amount_cents FROM customer_buckets WHERE customer_id = ?"
_READ_TERMINAL = "SELECT usable_tick, nb_tx, nb_fraud FROM terminal_buckets WHERE terminal_id = ?"
_COUNT_CUSTOMER = """
INSERT INTO customer_buckets VALUES (?, ?, 1, ?, ?) ON CONFLICT (customer_id, day) DO UPDATE
SET nb_tx = nb_tx + 1, amount_cents = amount_cents + excluded.amount_cents,
    expires_at = excluded.expires_at
"""
_COUNT_TERMINAL = """
INSERT INTO terminal_buckets VALUES (?, ?, 1, 0, ?) ON CONFLICT (terminal_id, usable_tick)
DO UPDATE SET nb_tx = nb_tx + 1, expires_at = excluded.expires_at
"""
_DROP_OLD = {
    "customer": "DELETE FROM customer_buckets WHERE customer_id = ? AND day < ?",
    "terminal": "DELETE FROM terminal_buckets WHERE terminal_id = ? AND usable_tick < ?",
}
_SET_LABEL = "UPDATE transactions SET label = ? WHERE transaction_id = ?"
_COUNT_FRAUD = """
UPDATE terminal_buckets SET nb_fraud = nb_fraud + ? WHERE terminal_id = ? AND usable_tick = ?
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
        INSERT INTO terminal_buckets VALUES (?, ?, ?, ?, ?) ON CONFLICT (terminal_id, usable_tick)
        DO UPDATE SET nb_tx = excluded.nb_tx, nb_fraud = excluded.nb_fraud,
        expires_at = excluded.expires_at""",
    "index": "INSERT OR REPLACE INTO transactions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(transactions)")}
        except (OSError, sqlite3.Error) as error:
            raise OnlineStoreUnavailable(
                f"cannot open the online store at {path}: {error}"
            ) from error
        if "usable_tick" not in columns:
            self._db.close()
            raise OnlineStoreUnavailable(
                f"the online store at {path} has the day-bucket layout of an earlier version: "
                "delete the file and run `fraudops backfill`"
            )
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

    def _exchange(self, transaction_id: int, entry: IndexEntry, plan: BucketPlan) -> Fetched:
        customer_id, terminal_id, day, usable_tick, cents, _ = entry
        now = time.time()
        customer_expiry = int(now) + self.customer_retention_s
        terminal_expiry = int(now) + self.terminal_retention_s
        with self._transaction() as db:
            added = db.execute(
                _ADD_TRANSACTION, (transaction_id, *entry[:5], terminal_expiry)
            ).rowcount
            previous = None
            if not added:
                previous = IndexEntry(*db.execute(_READ_INDEX, (transaction_id,)).fetchone())
            customer = {
                d: CustomerBucket(n, a) for d, n, a in db.execute(_READ_CUSTOMER, (customer_id,))
            }
            terminal = {
                d: TerminalBucket(n, f) for d, n, f in db.execute(_READ_TERMINAL, (terminal_id,))
            }
            if added:
                db.execute(_COUNT_CUSTOMER, (customer_id, day, cents, customer_expiry))
                db.execute(_COUNT_TERMINAL, (terminal_id, usable_tick, terminal_expiry))
            if min(customer, default=day) < plan.customer_keep_from:
                db.execute(_DROP_OLD["customer"], (customer_id, plan.customer_keep_from))
            if min(terminal, default=usable_tick) < plan.terminal_keep_from:
                db.execute(_DROP_OLD["terminal"], (terminal_id, plan.terminal_keep_from))
            if now >= self._next_sweep:
                self._sweep(db, now)
        return Fetched(customer, terminal, previous)

    def _sweep(self, db: sqlite3.Connection, now: float) -> None:
        for statement in _SWEEP:
            db.execute(statement, (int(now),))
        self._next_sweep = now + SQLITE_SWEEP_INTERVAL_S

    def _store_label(self, transaction_id: int, label: int) -> IndexEntry | None:
        with self._transaction() as db:
            row = db.execute(_READ_INDEX, (transaction_id,)).fetchone()
            if row is None:
                return None
            previous = IndexEntry(*row)
            if previous.label != label:
                change = label - (previous.label or 0)
                if change:
                    db.execute(_COUNT_FRAUD, (change, previous.terminal_id, previous.usable_tick))
                db.execute(_SET_LABEL, (label, transaction_id))
        return previous

    def _write_backfill(self, state: BackfillState) -> None:
        now = int(time.time())
        customer_expiry = pl.lit(now + self.customer_retention_s, dtype=pl.Int64)
        terminal_expiry = pl.lit(now + self.terminal_retention_s, dtype=pl.Int64)
        customers = state.customers.select(CUSTOMER_ID, DAY, NB_TX, CENTS, customer_expiry)
        terminals = state.terminals.select(
            TERMINAL_ID, USABLE_TICK, NB_TX, NB_FRAUD, terminal_expiry
        )
        index = state.index.with_columns(terminal_expiry)
        with self._transaction() as db:
            db.executemany(_BACKFILL["customers"], customers.iter_rows())
            db.executemany(_BACKFILL["terminals"], terminals.iter_rows())
            db.executemany(_BACKFILL["index"], index.iter_rows())
