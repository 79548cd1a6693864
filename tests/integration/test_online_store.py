"""The online feature store against real SQLite files and a real Redis server.

The central check is parity: a simulated stream replayed through the store, with fraud labels
fed back at the hour they become usable (`fraudops.features.label_timing`), must give exactly
the offline features of `build_features`, on both backends, from the start or after a
backfill mid-stream.
"""

from __future__ import annotations

import datetime as dt
import heapq
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
import redis
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from fraudops.cli import app
from fraudops.config import FeatureParams, SimulateParams, get_settings
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
from fraudops.features.definitions import (
    build_features,
    customer_bucket_days,
    customer_nb_tx_column,
    day_number,
    feature_columns,
    terminal_bucket_ticks,
    terminal_nb_tx_column,
    terminal_risk_column,
)
from fraudops.features.label_timing import label_timing
from fraudops.features.online_store import OnlineStore, open_online_store
from fraudops.features.store_types import (
    LabelOutcome,
    OnlineStoreUnavailable,
    Transaction,
    TransactionConflict,
)
from fraudops.local.servers import free_port

PARAMS = FeatureParams()
FEATURES = feature_columns(PARAMS)
TIMING = label_timing(PARAMS)
# A Wednesday noon, and how long after it the labels of its transactions are usable.
D = dt.datetime(2018, 6, 20, 12)
KNOWN = TIMING.delay


TABLES = {
    "c": ("customer_buckets", "customer_id", "day"),
    "t": ("terminal_buckets", "terminal_id", "usable_tick"),
    "x": ("transactions", "transaction_id", ""),
}


@dataclass(frozen=True)
class Backend:
    """Where one store lives: a URL and, for Redis, a key namespace of its own."""

    url: str
    namespace: str

    @property
    def is_redis(self) -> bool:
        return self.url.startswith("redis")

    def open(self, params: FeatureParams = PARAMS) -> OnlineStore:
        return open_online_store(self.url, params, namespace=self.namespace)

    def seconds_to_expiry(self, kind: str, key: int) -> float:
        """How long until customer (``c``), terminal (``t``) or transaction (``x``) KEY expires."""
        if self.is_redis:
            return redis.Redis.from_url(self.url).ttl(f"{self.namespace}:{kind}:{key}")
        table, column, _ = TABLES[kind]
        with closing(sqlite3.connect(self.url.removeprefix("sqlite:///"))) as db:
            query = f"SELECT max(expires_at) FROM {table} WHERE {column} = ?"
            return db.execute(query, (key,)).fetchone()[0] - time.time()

    def stored_keys(self, kind: str, entity_id: int) -> set[int]:
        """Keys of the buckets of customer (``c``: days) or terminal (``t``: label ticks)."""
        if self.is_redis:
            client = redis.Redis.from_url(self.url)
            return {int(key) for key in client.hkeys(f"{self.namespace}:{kind}:{entity_id}")}
        table, column, key = TABLES[kind]
        with closing(sqlite3.connect(self.url.removeprefix("sqlite:///"))) as db:
            rows = db.execute(f"SELECT {key} FROM {table} WHERE {column} = ?", (entity_id,))
            return {value for (value,) in rows}


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.services)])
def new_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Backend]]:
    """Makes empty stores of one backend; Redis keys are deleted afterwards."""
    made: list[Backend] = []

    def make() -> Backend:
        name = f"test-{uuid.uuid4().hex[:12]}"
        if request.param == "redis":
            backend = Backend(request.getfixturevalue("redis_url"), name)
        else:
            backend = Backend(f"sqlite:///{tmp_path / name}.db", name)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        if backend.is_redis:
            client = redis.Redis.from_url(backend.url)
            for key in client.scan_iter(f"{backend.namespace}:*", count=1000):
                client.delete(key)


@pytest.fixture
def backend(new_backend: Callable[[], Backend]) -> Backend:
    return new_backend()


@pytest.fixture
def store(backend: Backend) -> Iterator[OnlineStore]:
    with backend.open() as opened:
        yield opened


@pytest.fixture(scope="module")
def stream() -> pl.DataFrame:
    """About 2,800 simulated transactions over 45 days, one in nine of them a fraud.

    The extra frauds make terminal risk non-zero often enough to test it.
    """
    raw = simulate(SimulateParams(customers=60, terminals=150, days=45, seed=7))
    extra = pl.col(TRANSACTION_ID) % 9 == 0
    return raw.with_columns((pl.col(TX_FRAUD).cast(pl.Boolean) | extra).cast(pl.Int8))


def transaction(row: dict) -> Transaction:
    return Transaction(
        row[TRANSACTION_ID], row[TX_DATETIME], row[CUSTOMER_ID], row[TERMINAL_ID], row[TX_AMOUNT]
    )


def replay(
    store: OnlineStore, scored: pl.DataFrame, frauds: pl.DataFrame, columns: list[str] = FEATURES
) -> pl.DataFrame:
    """Score SCORED in id order; each transaction of FRAUDS gets its fraud label at the start
    of the hour it becomes usable, as an hourly label feed would deliver it."""
    pending = [
        (TIMING.usable_tick(when), tx_id)
        for tx_id, when in frauds.select(TRANSACTION_ID, TX_DATETIME).iter_rows()
    ]
    heapq.heapify(pending)
    served = []
    for row in scored.sort(TRANSACTION_ID).iter_rows(named=True):
        now = TIMING.tick(row[TX_DATETIME])
        while pending and pending[0][0] <= now:
            assert store.record_label(heapq.heappop(pending)[1], 1) == LabelOutcome.RECORDED
        served.append(store.score_features(transaction(row)))
    return pl.DataFrame(served, schema=dict.fromkeys(columns, pl.Float64))


def offline(
    raw: pl.DataFrame, scored: pl.DataFrame, params: FeatureParams = PARAMS
) -> pl.DataFrame:
    """The offline features (computed over all of RAW) of the transactions in SCORED."""
    ids = scored[TRANSACTION_ID]
    features = build_features(raw, params)
    selected = features.filter(pl.col(TRANSACTION_ID).is_in(ids.implode()))
    return selected.select(feature_columns(params))


def frauds_of(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.filter(pl.col(TX_FRAUD) == 1)


def not_usable_by_end_of(raw: pl.DataFrame, until: dt.date) -> pl.DataFrame:
    """Transactions whose labels are not yet usable at the end of UNTIL."""
    next_day = dt.datetime.combine(until + dt.timedelta(days=1), dt.time())
    usable = TIMING.usable_tick_expr(pl.col(TX_DATETIME))
    return raw.filter(usable >= TIMING.tick(next_day))


def frauds_unknown_at_end_of(raw: pl.DataFrame, until: dt.date) -> pl.DataFrame:
    """Frauds whose labels are not yet usable at the end of UNTIL: the feed delivers them."""
    return frauds_of(not_usable_by_end_of(raw, until))


# --- parity ---------------------------------------------------------------------------------


def test_served_features_equal_offline_features(store: OnlineStore, stream: pl.DataFrame) -> None:
    served = replay(store, stream, frauds_of(stream))
    assert stream.height > 2000 and frauds_of(stream).height > 200
    assert_frame_equal(served, offline(stream, stream), check_exact=True)


def test_amount_ratios_are_served_as_computed_offline(
    backend: Backend, stream: pl.DataFrame
) -> None:
    params = PARAMS.model_copy(update={"amount_ratio_windows_days": (1, 7, 30)})
    with backend.open(params) as store:
        served = replay(store, stream, frauds_of(stream), feature_columns(params))
    assert served["customer_amount_ratio_30d"].n_unique() > 1000
    assert_frame_equal(served, offline(stream, stream, params), check_exact=True)


def test_backfill_then_continue_equals_a_full_replay(
    store: OnlineStore, stream: pl.DataFrame
) -> None:
    days = stream[TX_DATETIME].dt.date()
    until = days.min() + dt.timedelta(days=30)
    before, after = stream.filter(days <= until), stream.filter(days > until)
    summary = store.backfill(stream, until=until)
    assert summary.until == until
    assert summary.transactions == before.height
    # Transactions whose labels are not yet usable at the end of UNTIL wait for the feed.
    assert summary.pending_labels == not_usable_by_end_of(before, until).height > 0
    served = replay(store, after, frauds_unknown_at_end_of(stream, until))
    assert_frame_equal(served, offline(stream, after), check_exact=True)


def test_backfill_twice_changes_nothing(
    new_backend: Callable[[], Backend], stream: pl.DataFrame
) -> None:
    until = stream[TX_DATETIME].dt.date().min() + dt.timedelta(days=35)
    after = stream.filter(pl.col(TX_DATETIME).dt.date() == until + dt.timedelta(days=1))
    results = []
    for times in (1, 2):
        with new_backend().open() as store:
            for _ in range(times):
                store.backfill(stream, until=until)
            results.append(replay(store, after, pl.DataFrame(schema=stream.schema)))
    assert_frame_equal(results[0], results[1], check_exact=True)


def test_backfill_command_fills_the_configured_store(
    stream: pl.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw_dir, store_path = tmp_path / "raw", tmp_path / "online.db"
    write_raw(stream, raw_dir)
    monkeypatch.setenv("FRAUDOPS_ONLINE_STORE_URL", f"sqlite:///{store_path}")
    get_settings.cache_clear()
    until = stream[TX_DATETIME].dt.date().min() + dt.timedelta(days=40)
    result = CliRunner().invoke(
        app, ["backfill", "--raw", str(raw_dir), "--until", until.isoformat()]
    )
    assert result.exit_code == 0, result.output
    next_day = stream.filter(pl.col(TX_DATETIME).dt.date() == until + dt.timedelta(days=1))
    with open_online_store(f"sqlite:///{store_path}", PARAMS) as store:
        served = replay(store, next_day, frauds_unknown_at_end_of(stream, until))
    assert next_day.height > 0
    assert_frame_equal(served, offline(stream, next_day), check_exact=True)


# --- repeated transactions and labels -------------------------------------------------------


def test_a_repeated_transaction_is_counted_once(store: OnlineStore) -> None:
    first = Transaction(1, D, customer_id=7, terminal_id=3, tx_amount=10.0)
    features = store.score_features(first)
    assert store.score_features(first) == features
    later = store.score_features(Transaction(2, D, customer_id=7, terminal_id=3, tx_amount=20.0))
    assert later[customer_nb_tx_column(1)] == 2.0
    assert later["customer_avg_amount_1d"] == 15.0
    matured = store.score_features(Transaction(3, D + KNOWN, 8, 3, 1.0))
    assert matured[terminal_nb_tx_column(1)] == 2.0
    with pytest.raises(TransactionConflict):
        store.score_features(Transaction(1, D, customer_id=7, terminal_id=3, tx_amount=99.0))


def test_labels_count_once_and_unknown_ids_say_so(store: OnlineStore) -> None:
    for tx_id in (1, 2):
        store.score_features(Transaction(tx_id, D, customer_id=tx_id, terminal_id=3, tx_amount=5.0))
    assert store.record_label(999, 1) == LabelOutcome.UNKNOWN_TRANSACTION
    assert store.record_label(1, 1) == LabelOutcome.RECORDED
    assert store.record_label(1, 1) == LabelOutcome.UNCHANGED
    assert store.record_label(2, 0) == LabelOutcome.RECORDED

    def risk(tx_id: int) -> float:
        probe = Transaction(tx_id, D + KNOWN, customer_id=50, terminal_id=3, tx_amount=1.0)
        return store.score_features(probe)[terminal_risk_column(1)]

    assert risk(100) == 0.5
    assert store.record_label(1, 0) == LabelOutcome.RECORDED  # a correction
    assert risk(101) == 0.0
    with pytest.raises(ValueError, match="0 or 1"):
        store.record_label(1, 2)


def test_a_label_after_its_day_matured_is_reported_late(store: OnlineStore) -> None:
    store.score_features(Transaction(1, D, 1, 1, 5.0))
    store.score_features(Transaction(2, D, 1, 1, 5.0))
    on_time = D + KNOWN - dt.timedelta(hours=13)
    assert store.record_label(1, 1, received_at=on_time) == LabelOutcome.RECORDED
    assert store.record_label(2, 1, received_at=D + KNOWN) == LabelOutcome.RECORDED_LATE


# --- concurrency ----------------------------------------------------------------------------

WORKERS, PER_WORKER = 3, 200


def burst(store: OnlineStore, first_id: int) -> None:
    """Score PER_WORKER transactions of customer 1 at terminal 1 on day D, ids from FIRST_ID."""
    for tx_id in range(first_id, first_id + PER_WORKER):
        store.score_features(Transaction(tx_id, D, customer_id=1, terminal_id=1, tx_amount=1.5))


# Each worker process imports only the store, not this test module: it starts in about a second.
BURST_IN_OWN_PROCESS = """
import datetime as dt, sys, time
from fraudops.config import FeatureParams
from fraudops.features.online_store import open_online_store
from fraudops.features.store_types import Transaction
first, url, namespace, count, when, start_at = sys.argv[1:]
with open_online_store(url, FeatureParams(), namespace=namespace) as store:
    time.sleep(max(0.0, float(start_at) - time.time()))  # all workers start writing together
    for tx_id in range(int(first), int(first) + int(count)):
        store.score_features(Transaction(tx_id, dt.datetime.fromisoformat(when), 1, 1, 1.5))
"""


def assert_counts_exact(store: OnlineStore, expected: int) -> None:
    today = store.score_features(Transaction(10**9, D, 1, 2, 1.0))
    matured = store.score_features(Transaction(10**9 + 1, D + KNOWN, 2, 1, 1.0))
    assert today[customer_nb_tx_column(1)] == expected + 1
    assert today["customer_avg_amount_1d"] == (1.5 * expected + 1.0) / (expected + 1)
    assert matured[terminal_nb_tx_column(1)] == expected


def test_threads_scoring_at_once_keep_counts_exact(store: OnlineStore) -> None:
    threads = [threading.Thread(target=burst, args=(store, i * PER_WORKER)) for i in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert_counts_exact(store, WORKERS * PER_WORKER)


def test_processes_scoring_at_once_keep_counts_exact(store: OnlineStore, backend: Backend) -> None:
    start_at = time.time() + 3  # after every worker has imported
    arguments = [backend.url, backend.namespace, str(PER_WORKER), D.isoformat(), str(start_at)]
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", BURST_IN_OWN_PROCESS, str(i * PER_WORKER), *arguments]
        )
        for i in range(WORKERS)
    ]
    assert [worker.wait(timeout=120) for worker in workers] == [0] * WORKERS
    assert_counts_exact(store, WORKERS * PER_WORKER)


# --- retention and failures -----------------------------------------------------------------


def test_buckets_no_window_reads_are_dropped(store: OnlineStore, backend: Backend) -> None:
    days = 80
    for offset in range(days):
        store.score_features(Transaction(offset, D + dt.timedelta(days=offset), 1, 1, 1.0))
    last = day_number(D) + days - 1
    last_tick = TIMING.tick(D + dt.timedelta(days=days - 1))
    customer, terminal = backend.stored_keys("c", 1), backend.stored_keys("t", 1)
    written = {TIMING.usable_tick(D + dt.timedelta(days=offset)) for offset in range(days)}
    assert terminal <= written
    assert day_number(D) not in customer and min(written) not in terminal
    assert customer_bucket_days(last, PARAMS).start in customer
    # Every bucket a window can still read is there, and the labels still to come.
    assert {key for key in written if key >= terminal_bucket_ticks(last_tick, PARAMS).start} <= (
        terminal
    )
    # Redis prunes once a hash holds twice the buckets it needs; SQLite on every new day.
    assert len(customer) <= 2 * len(customer_bucket_days(last, PARAMS))
    reach_days = (TIMING.delay + dt.timedelta(days=max(PARAMS.terminal_windows_days))).days
    assert len(terminal) <= 2 * reach_days
    # Quiet entities and old index entries expire by time: after the terminal retention.
    retention_s = (reach_days + 1) * 86_400
    for kind, key in (("c", 1), ("t", 1), ("x", 0)):
        assert 0 < backend.seconds_to_expiry(kind, key) <= retention_s


def test_a_future_dated_transaction_does_not_drop_todays_buckets(store: OnlineStore) -> None:
    now = dt.datetime.now(dt.UTC)
    store.score_features(Transaction(1, now, 1, 1, 1.0))
    store.score_features(Transaction(2, dt.datetime(2100, 1, 1), 1, 1, 1.0))
    later = store.score_features(Transaction(3, now, 1, 1, 1.0))
    assert later[customer_nb_tx_column(1)] == 2.0


def test_ping_answers_when_reachable(store: OnlineStore) -> None:
    started = time.monotonic()
    store.ping()
    assert time.monotonic() - started < 1.0


@pytest.mark.services
def test_an_unreachable_redis_fails_fast_and_clearly() -> None:
    store = open_online_store(f"redis://127.0.0.1:{free_port()}/0", PARAMS)
    with pytest.raises(OnlineStoreUnavailable, match="online store redis://"):
        store.ping()
    with pytest.raises(OnlineStoreUnavailable):
        store.score_features(Transaction(1, D, 1, 1, 1.0))


def test_an_unusable_sqlite_path_fails_clearly(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(OnlineStoreUnavailable, match="cannot open"):
        open_online_store(f"sqlite:///{blocker}/online.db", PARAMS)


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "postgresql://x/y", "sqlite:///"])
def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        open_online_store(url, PARAMS)


# --- the label timing rule ------------------------------------------------------------------


@pytest.mark.parametrize("minute", [0, 20])
def test_a_stored_fraud_counts_from_the_hour_its_label_is_usable(
    store: OnlineStore, minute: int
) -> None:
    """Received at once, the label is still read only from its usable hour, not a unit sooner."""
    fraud = D + dt.timedelta(hours=10, minutes=minute)
    store.score_features(Transaction(1, fraud, customer_id=1, terminal_id=3, tx_amount=5.0))
    assert store.record_label(1, 1, received_at=fraud) == LabelOutcome.RECORDED
    usable = TIMING.usable_from(fraud)
    assert usable == fraud.replace(minute=0) + KNOWN + dt.timedelta(hours=minute > 0)
    readers = [usable - dt.timedelta(hours=1), usable - dt.timedelta(seconds=1), usable]
    seen = [
        store.score_features(Transaction(10 + i, when, 50 + i, 3, 1.0))
        for i, when in enumerate(readers)
    ]
    assert [f[terminal_nb_tx_column(1)] for f in seen] == [0.0, 0.0, 1.0]
    assert [f[terminal_risk_column(1)] for f in seen] == [0.0, 0.0, 1.0]


def test_a_store_file_of_the_day_bucket_layout_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute(
            "CREATE TABLE transactions (transaction_id INTEGER PRIMARY KEY, customer_id INTEGER,"
            " terminal_id INTEGER, day INTEGER, amount_cents INTEGER, label INTEGER,"
            " expires_at INTEGER)"
        )
    with pytest.raises(OnlineStoreUnavailable, match="earlier version"):
        open_online_store(f"sqlite:///{path}", PARAMS)
