"""The prediction and label logs on real SQLite and PostgreSQL databases."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine, func, select, text

from fraudops.config import get_settings
from fraudops.hashing import SaltedHasher
from fraudops.local.servers import create_postgres_database, drop_postgres_database
from fraudops.logs.database import open_prediction_log
from fraudops.logs.errors import (
    LogBackpressureError,
    PredictionLogClosedError,
    PredictionLogUnavailableError,
)
from fraudops.logs.readers import read_predictions
from fraudops.logs.records import LabelRecord, PredictionRecord
from fraudops.logs.tables import labels, predictions
from fraudops.logs.writer import WRITER_NICENESS, PredictionLogWriter

SALT = "test-salt"
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
FEATURES = {"tx_amount": 12.5, "tx_during_night": 0.0, "terminal_risk_7d": 0.25}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def log_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A fresh, empty log database per test: a SQLite file or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'log' / 'predictions.db'}"
        return
    url = create_postgres_database(request.getfixturevalue("postgres_url"))
    yield url
    drop_postgres_database(url)


@pytest.fixture
def engine(log_url: str) -> Iterator[Engine]:
    engine = open_prediction_log(log_url)
    yield engine
    engine.dispose()


def writer_on(engine: Engine, **options: float) -> PredictionLogWriter:
    return PredictionLogWriter(engine, id_salt=SALT, **{"flush_interval_s": 0.05, **options})


def record(number: int, **overrides: object) -> PredictionRecord:
    values: dict[str, object] = {
        "request_id": f"req-{number}",
        "transaction_id": number,
        "tx_datetime": dt.datetime(2018, 9, 1) + dt.timedelta(minutes=number),
        "customer_id": number % 97,
        "terminal_id": number % 89,
        "features": FEATURES,
        "model_name": "fraud-detector",
        "model_version": "3",
        "model_alias": "champion",
        "arm": "champion",
        "score": 0.125,
        "decision": False,
        "threshold": 0.5,
        "latency_ms": 1.5,
        "logged_at": T0 + dt.timedelta(seconds=number),
    }
    return PredictionRecord(**{**values, **overrides})


def count(engine: Engine, table=predictions, *conditions) -> int:
    query = select(func.count()).select_from(table).where(*conditions)
    with engine.connect() as connection:
        return connection.execute(query).scalar_one()


def test_rows_from_many_threads_land_exactly_once(engine: Engine) -> None:
    threads, per_thread = 4, 1500
    # A small queue makes the producers meet back-pressure while the writer keeps up.
    writer = writer_on(engine, batch_size=64, queue_size=256, enqueue_timeout_s=30)

    def produce(thread: int) -> None:
        for i in range(per_thread):
            number = thread * per_thread + i
            writer.log_prediction(record(number))
            if number % 2:
                writer.log_prediction(record(number, is_shadow=True, model_alias="challenger"))

    workers = [threading.Thread(target=produce, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    writer.close()

    served = threads * per_thread
    stats = writer.stats()
    assert count(engine, predictions, predictions.c.is_shadow.is_(False)) == served
    with engine.connect() as connection:
        distinct = connection.execute(
            select(func.count(func.distinct(predictions.c.request_id)))
        ).scalar_one()
    assert distinct == served
    shadows = count(engine, predictions, predictions.c.is_shadow.is_(True))
    assert shadows == served // 2 - stats.shadow_dropped
    assert stats.predictions_written == served + shadows
    assert (stats.pending, stats.rows_rejected) == (0, 0)


def test_a_row_reads_back_with_hashed_ids_and_one_column_per_feature(engine: Engine) -> None:
    with writer_on(engine) as writer:
        writer.log_prediction(
            record(
                7,
                customer_id=123456,
                terminal_id="987",
                features={**FEATURES, "terminal_risk_7d": float("nan")},
                score=np.float32(0.75),  # what a model hands back
                decision=np.bool_(True),
            )
        )
    frame = read_predictions(engine)
    row = frame.iloc[0]
    hasher = SaltedHasher(SALT)
    assert len(frame) == 1
    assert (row.customer_hash, row.terminal_hash) == (
        hasher.pseudonym(123456),
        hasher.pseudonym(987),
    )
    assert "123456" not in frame.astype(str).to_numpy().ravel().tolist()
    assert row.score == pytest.approx(0.75)
    assert bool(row.decision) is True
    assert row.tx_amount == 12.5
    assert pd.isna(row.terminal_risk_7d)
    assert row.logged_at == T0 + dt.timedelta(seconds=7)
    assert row.tx_datetime == dt.datetime(2018, 9, 1, 0, 7)
    assert (row.model_name, row.model_version, row.arm, row.is_shadow) == (
        "fraud-detector",
        "3",
        "champion",
        False,
    )
    assert pd.isna(row.label)


def test_an_aware_transaction_time_is_stored_as_naive_utc(engine: Engine) -> None:
    local = dt.datetime(2018, 9, 1, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with writer_on(engine) as writer:
        writer.log_prediction(record(1, tx_datetime=local))
    assert read_predictions(engine).tx_datetime.tolist() == [pd.Timestamp(2018, 9, 1, 12, 0)]


def test_a_replayed_row_is_stored_once(engine: Engine) -> None:
    with writer_on(engine) as writer:
        writer.log_prediction(record(1))
        writer.flush()
        writer.log_prediction(record(1, score=0.9))
        writer.log_prediction(record(1, is_shadow=True))
    assert count(engine) == 2
    assert read_predictions(engine).score.tolist() == [0.125]


def test_labels_join_as_they_were_known_at_a_given_time(engine: Engine) -> None:
    with writer_on(engine) as writer:
        for number in (1, 2, 3):
            writer.log_prediction(record(number))
        writer.log_prediction(record(1, is_shadow=True, model_alias="challenger", score=0.5))
        writer.log_label(LabelRecord(1, 0, received_at=T0 + dt.timedelta(days=1)))
        writer.log_label(LabelRecord(2, 1, received_at=T0 + dt.timedelta(days=2)))
        writer.log_label(LabelRecord(1, 1, received_at=T0 + dt.timedelta(days=3)))  # corrected

    def labels_known(by: dt.datetime | None, rows: str = "served") -> list:
        frame = read_predictions(engine, labels_received_by=by, rows=rows)
        return [None if pd.isna(v) else int(v) for v in frame.label]

    assert count(engine, labels) == 3
    assert labels_known(T0) == [None, None, None]
    assert labels_known(T0 + dt.timedelta(days=2)) == [0, 1, None]
    assert labels_known(None) == [1, 1, None]
    assert labels_known(None, rows="shadow") == [1]
    assert read_predictions(engine, rows="all").is_shadow.tolist() == [False, True, False, False]
    received = read_predictions(engine).label_received_at.iloc[0]
    assert received == T0 + dt.timedelta(days=3)


def test_reader_windows_by_time_range_and_last_n(engine: Engine) -> None:
    with writer_on(engine) as writer:
        for number in range(10):
            writer.log_prediction(record(number))

    def numbers(frame: pd.DataFrame) -> list[int]:
        return frame.transaction_id.tolist()

    second = dt.timedelta(seconds=1)
    assert numbers(read_predictions(engine, start=T0 + 2 * second, end=T0 + 5 * second)) == [
        2,
        3,
        4,
    ]
    assert numbers(read_predictions(engine, last_n=3)) == [7, 8, 9]
    assert numbers(read_predictions(engine, last_n=2, end=T0 + 5 * second)) == [3, 4]
    assert numbers(read_predictions(engine, last_n=50)) == list(range(10))
    by_event_time = read_predictions(
        engine,
        time_column="tx_datetime",
        start=dt.datetime(2018, 9, 1, 0, 8),
    )
    assert numbers(by_event_time) == [8, 9]
    empty = read_predictions(engine, start=T0 + 100 * second)
    assert empty.empty
    assert {"score", "label", "arm"} <= set(empty.columns)


def test_flush_stores_rows_without_waiting_for_the_interval(engine: Engine) -> None:
    writer = writer_on(engine, batch_size=10_000, flush_interval_s=60)
    for number in range(25):
        writer.log_prediction(record(number))
    writer.log_label(LabelRecord(3, 1, received_at=T0))
    started = time.monotonic()
    writer.flush(timeout=20)
    assert time.monotonic() - started < 20
    assert (count(engine), count(engine, labels)) == (25, 1)
    writer.close()


@contextlib.contextmanager
def write_lock_held(engine: Engine) -> Iterator[None]:
    """Another client holding the write lock: the writer's inserts wait, as on a stalled DB."""
    if engine.dialect.name == "sqlite":
        connection = sqlite3.connect(engine.url.database, isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            connection.execute("ROLLBACK")
            connection.close()
        return
    with engine.connect() as connection:
        connection.execute(text("LOCK TABLE predictions IN EXCLUSIVE MODE"))
        yield
        connection.rollback()


def test_a_stalled_database_pushes_back_on_served_rows_and_drops_shadows(engine: Engine) -> None:
    capacity = 5
    writer = writer_on(engine, batch_size=1, queue_size=capacity, enqueue_timeout_s=0.3)
    accepted = 0
    with write_lock_held(engine):
        with pytest.raises(LogBackpressureError, match="queue full"):
            for number in range(100):
                writer.log_prediction(record(number))
                accepted += 1
        assert writer.log_prediction(record(1000, is_shadow=True)) is False
        with pytest.raises(LogBackpressureError):
            writer.log_label(LabelRecord(1, 1))
        started = time.monotonic()
        with pytest.raises(LogBackpressureError):
            writer.log_prediction(record(1001))
        assert time.monotonic() - started >= 0.3
        started = time.monotonic()
        with pytest.raises(LogBackpressureError):
            writer.log_prediction(record(1002), wait_s=0)  # what an event loop asks for
        assert time.monotonic() - started < 0.2
    writer.close(timeout=30)
    # The writer holds one row in its stuck insert and the queue the rest: nothing is lost.
    assert accepted == capacity + 1
    assert count(engine) == accepted
    assert writer.stats().shadow_dropped == 1


def test_a_refused_row_is_counted_and_does_not_block_the_others(engine: Engine) -> None:
    with writer_on(engine, batch_size=100, flush_interval_s=60) as writer:
        for number in range(10):
            writer.log_prediction(record(number))
        writer.log_prediction(record(99, transaction_id=2**70))  # out of BIGINT range
        writer.log_prediction(record(98, features=["not", "a", "mapping"]))
        writer.log_label(LabelRecord(5, 2))  # not a label
        writer.log_label(LabelRecord(5, 1))
        writer.flush(timeout=30)
        stats = writer.stats()
    assert (count(engine), count(engine, labels)) == (10, 1)
    assert (stats.rows_rejected, stats.predictions_written, stats.labels_written) == (3, 10, 1)


def test_a_closed_writer_refuses_served_rows_and_drops_shadows(engine: Engine) -> None:
    writer = writer_on(engine)
    writer.log_prediction(record(1))
    writer.close()
    writer.close()
    with pytest.raises(PredictionLogClosedError):
        writer.log_prediction(record(2))
    with pytest.raises(PredictionLogClosedError):
        writer.log_label(LabelRecord(1, 1))
    assert writer.log_prediction(record(3, is_shadow=True)) is False
    assert count(engine) == 1


@pytest.mark.skipif(sys.platform != "linux", reason="threads have their own priority on Linux")
def test_the_writer_thread_runs_at_a_lower_cpu_priority(tmp_path) -> None:
    """So that a busy server answers requests first and writes rows in the gaps."""
    engine = open_prediction_log(f"sqlite:///{tmp_path / 'log.db'}")
    process = os.getpriority(os.PRIO_PROCESS, 0)
    with writer_on(engine) as writer:
        writer.log_prediction(record(1))
        writer.flush(timeout=10)  # the thread has started and set its priority
        thread = writer._thread.native_id
        assert os.getpriority(os.PRIO_PROCESS, thread) == min(process + WRITER_NICENESS, 19)
    assert os.getpriority(os.PRIO_PROCESS, 0) == process  # the server's threads keep theirs
    engine.dispose()


def test_default_settings_log_to_a_sqlite_file_in_wal_mode() -> None:
    settings = get_settings()
    writer = PredictionLogWriter.from_settings(settings)
    writer.log_prediction(record(1))
    writer.close()
    path = settings.home / "predictions.db"
    assert path.exists()
    with contextlib.closing(sqlite3.connect(path)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert connection.execute("SELECT count(*) FROM predictions").fetchone() == (1,)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_postgres_fails_clearly_at_start() -> None:
    url = f"postgresql+psycopg2://fraudops:s3cret@127.0.0.1:{closed_port()}/fraudops"
    with pytest.raises(PredictionLogUnavailableError, match="cannot open the prediction log") as e:
        open_prediction_log(url)
    assert "Connection refused" in str(e.value)
    assert "s3cret" not in str(e.value)


def test_an_unusable_sqlite_path_fails_clearly_at_start(tmp_path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(PredictionLogUnavailableError, match="not-a-directory"):
        open_prediction_log(f"sqlite:///{blocker / 'predictions.db'}")
