"""The prediction log's schema under Alembic, on real SQLite files and PostgreSQL databases.

A database is upgraded from empty, from the schema the code created before migrations (with
rows in it), and by several processes at once; the revisions end at the schema the code
uses (``fraudops.logs.tables``), and the first one's downgrade removes the tables.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, func, inspect, select, text

from fraudops.local.servers import create_postgres_database, drop_postgres_database
from fraudops.logs.database import create_log_engine, open_prediction_log, stored_revision
from fraudops.logs.errors import PredictionLogSchemaError, PredictionLogUnavailableError
from fraudops.logs.migrate import MIGRATION_LOCK_KEY, alembic_config, migration_lock
from fraudops.logs.readers import read_predictions
from fraudops.logs.records import PredictionRecord
from fraudops.logs.tables import SCHEMA_REVISION, VERSION_TABLE, metadata
from fraudops.logs.writer import PredictionLogWriter

# The tables exactly as ``metadata.create_all`` created them before the migrations (the DDL
# SQLAlchemy emitted then, per backend), frozen here: the code's tables will move on.
PRE_MIGRATION_DDL = {
    "postgresql": """
CREATE TABLE predictions (
    id BIGSERIAL NOT NULL, request_id VARCHAR(64) NOT NULL, transaction_id BIGINT NOT NULL,
    logged_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    tx_datetime TIMESTAMP WITHOUT TIME ZONE NOT NULL, customer_hash VARCHAR(32) NOT NULL,
    terminal_hash VARCHAR(32) NOT NULL, features JSONB NOT NULL,
    model_name VARCHAR(128) NOT NULL, model_version VARCHAR(32) NOT NULL,
    model_alias VARCHAR(64) NOT NULL, arm VARCHAR(64) NOT NULL, is_shadow BOOLEAN NOT NULL,
    score FLOAT NOT NULL, decision BOOLEAN NOT NULL, threshold FLOAT NOT NULL,
    latency_ms FLOAT NOT NULL, PRIMARY KEY (id),
    CONSTRAINT uq_predictions_request UNIQUE (request_id, is_shadow)
);
COMMENT ON COLUMN predictions.tx_datetime IS 'the transaction''s own clock';
COMMENT ON COLUMN predictions.arm IS 'A/B arm of the request, also on shadows';
CREATE INDEX ix_predictions_logged_at ON predictions (logged_at);
CREATE INDEX ix_predictions_transaction_id ON predictions (transaction_id);
CREATE INDEX ix_predictions_tx_datetime ON predictions (tx_datetime);
CREATE TABLE labels (
    id BIGSERIAL NOT NULL, transaction_id BIGINT NOT NULL,
    label SMALLINT NOT NULL CHECK (label IN (0, 1)),
    received_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, PRIMARY KEY (id)
);
CREATE INDEX ix_labels_transaction_received ON labels (transaction_id, received_at);
""",
    "sqlite": """
CREATE TABLE predictions (
    id INTEGER NOT NULL, request_id VARCHAR(64) NOT NULL, transaction_id BIGINT NOT NULL,
    logged_at DATETIME NOT NULL, tx_datetime DATETIME NOT NULL,
    customer_hash VARCHAR(32) NOT NULL, terminal_hash VARCHAR(32) NOT NULL,
    features JSON NOT NULL, model_name VARCHAR(128) NOT NULL,
    model_version VARCHAR(32) NOT NULL, model_alias VARCHAR(64) NOT NULL,
    arm VARCHAR(64) NOT NULL, is_shadow BOOLEAN NOT NULL, score FLOAT NOT NULL,
    decision BOOLEAN NOT NULL, threshold FLOAT NOT NULL, latency_ms FLOAT NOT NULL,
    PRIMARY KEY (id), CONSTRAINT uq_predictions_request UNIQUE (request_id, is_shadow)
);
CREATE INDEX ix_predictions_tx_datetime ON predictions (tx_datetime);
CREATE INDEX ix_predictions_logged_at ON predictions (logged_at);
CREATE INDEX ix_predictions_transaction_id ON predictions (transaction_id);
CREATE TABLE labels (
    id INTEGER NOT NULL, transaction_id BIGINT NOT NULL,
    label SMALLINT NOT NULL CHECK (label IN (0, 1)), received_at DATETIME NOT NULL,
    PRIMARY KEY (id)
);
CREATE INDEX ix_labels_transaction_received ON labels (transaction_id, received_at);
""",
}

OLD_ROWS = """
INSERT INTO predictions (request_id, transaction_id, logged_at, tx_datetime, customer_hash,
    terminal_hash, features, model_name, model_version, model_alias, arm, is_shadow, score,
    decision, threshold, latency_ms)
VALUES ('old-1', 11, '2026-03-01 12:00:00', '2018-09-01 00:01:00', 'c1', 't1',
        '{"tx_amount": 12.5}', 'fraud-detector', '3', 'champion', 'champion', false, 0.25,
        false, 0.5, 1.5),
       ('old-1', 11, '2026-03-01 12:00:01', '2018-09-01 00:01:00', 'c1', 't1',
        '{"tx_amount": 12.5}', 'fraud-detector', '4', 'challenger', 'champion', true, 0.75,
        true, 0.5, 2.5);
INSERT INTO labels (transaction_id, label, received_at) VALUES (11, 1, '2026-03-02 08:00:00');
"""

#: A child process that opens the log the way a starting worker does. It loads Alembic before
#: it says "ready", so from then on only the upgrade itself is left to run.
OPEN_LOG = (
    "import sys; import fraudops.logs.migrate; "
    "from fraudops.logs.database import open_prediction_log; "
    "print('ready', flush=True); open_prediction_log(sys.argv[1]).dispose()"
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def log_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of this test's own: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'predictions.db'}"
        return
    url = create_postgres_database(request.getfixturevalue("postgres_url"))
    yield url
    drop_postgres_database(url)


@pytest.fixture
def plain_engine(log_url: str) -> Iterator[Engine]:
    """An engine that migrates nothing, to build and inspect databases behind the code's back."""
    engine = create_log_engine(log_url)
    yield engine
    engine.dispose()


def run_script(engine: Engine, script: str) -> None:
    with engine.begin() as connection:
        for statement in script.split(";"):
            if statement.strip():
                connection.exec_driver_sql(statement)


def schema_differences(engine: Engine) -> list[object]:
    """What autogenerate would change to turn the database into ``fraudops.logs.tables``."""
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "version_table": VERSION_TABLE}
        )
        return list(compare_metadata(context, metadata))


def recorded_versions(engine: Engine) -> list[str]:
    """Every row of the version table: exactly one once the schema is at a revision."""
    with engine.connect() as connection:
        return list(connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())


def log_tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) & {"predictions", "labels"}


def test_the_code_schema_revision_is_the_single_head_of_the_migrations() -> None:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert heads == [SCHEMA_REVISION], (
        "a new revision moves fraudops.logs.tables.SCHEMA_REVISION to it"
    )


def test_an_empty_database_is_upgraded_to_the_schema_the_code_uses(
    log_url: str, plain_engine: Engine
) -> None:
    assert log_tables(plain_engine) == set()
    open_prediction_log(log_url).dispose()
    assert stored_revision(plain_engine) == SCHEMA_REVISION
    assert schema_differences(plain_engine) == []
    open_prediction_log(log_url).dispose()  # a second start finds it at head
    assert recorded_versions(plain_engine) == [SCHEMA_REVISION]


def test_a_pre_migration_database_is_stamped_and_keeps_its_rows(
    log_url: str, plain_engine: Engine
) -> None:
    run_script(plain_engine, PRE_MIGRATION_DDL[plain_engine.dialect.name] + OLD_ROWS)
    assert stored_revision(plain_engine) is None

    engine = open_prediction_log(log_url)
    try:
        assert stored_revision(engine) == SCHEMA_REVISION
        assert schema_differences(engine) == []
        old = read_predictions(engine, rows="all")
        assert list(old["request_id"]) == ["old-1", "old-1"]
        assert list(old["model_version"]) == ["3", "4"]
        assert list(old["label"]) == [1, 1]
        assert list(old["tx_amount"]) == [12.5, 12.5]
        with PredictionLogWriter(engine, id_salt="salt") as writer:
            writer.log_prediction(new_record())
        served = read_predictions(engine, rows="served")
        assert list(served["request_id"]) == ["old-1", "new-1"]
    finally:
        engine.dispose()


def new_record() -> PredictionRecord:
    return PredictionRecord(
        request_id="new-1",
        transaction_id=12,
        tx_datetime=dt.datetime(2018, 9, 1, 0, 2),
        customer_id=7,
        terminal_id=8,
        features={"tx_amount": 3.0},
        model_name="fraud-detector",
        model_version="4",
        model_alias="champion",
        arm="champion",
        score=0.125,
        decision=False,
        threshold=0.5,
        latency_ms=1.0,
        logged_at=dt.datetime(2026, 3, 3, tzinfo=dt.UTC),
    )


def test_log_tables_of_another_shape_are_refused_and_left_untouched(
    log_url: str, plain_engine: Engine
) -> None:
    run_script(plain_engine, PRE_MIGRATION_DDL[plain_engine.dialect.name] + OLD_ROWS)
    run_script(plain_engine, "ALTER TABLE predictions ADD COLUMN note VARCHAR(10)")

    with pytest.raises(PredictionLogSchemaError, match="predictions has columns") as error:
        open_prediction_log(log_url)

    assert "cannot open the prediction log at" in str(error.value)
    assert VERSION_TABLE not in inspect(plain_engine).get_table_names()
    with plain_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM predictions")).scalar() == 2


def test_a_database_at_a_revision_the_code_does_not_know_is_refused_by_name(
    log_url: str, plain_engine: Engine
) -> None:
    open_prediction_log(log_url).dispose()
    with plain_engine.begin() as connection:
        connection.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = 'from-newer-code'"))

    with pytest.raises(PredictionLogUnavailableError, match="from-newer-code"):
        open_prediction_log(log_url)

    assert log_tables(plain_engine) == {"predictions", "labels"}


def test_the_downgrade_of_the_first_revision_removes_the_tables(
    log_url: str, plain_engine: Engine
) -> None:
    open_prediction_log(log_url).dispose()

    with migration_lock(plain_engine) as connection:
        command.downgrade(alembic_config(connection), "base")

    assert log_tables(plain_engine) == set()
    assert stored_revision(plain_engine) is None


def start_openers(url: str, count: int) -> list[subprocess.Popen[str]]:
    """COUNT processes that each open the log at URL, as workers starting together do."""
    return [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_LOG, url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(count)
    ]


def finish(processes: list[subprocess.Popen[str]]) -> list[tuple[int, str]]:
    """Each process's exit status and output."""
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    return [
        (process.returncode, output) for process, output in zip(processes, outputs, strict=True)
    ]


@pytest.mark.services
def test_workers_that_start_together_on_postgresql_wait_for_one_migration(
    postgres_url: str,
) -> None:
    """The test holds the migration lock until every worker is queued behind it, so the
    upgrades truly overlap; once it lets go, each succeeds and one revision is recorded."""
    url = create_postgres_database(postgres_url)
    holder = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with holder.connect() as lock:
            lock.execute(select(func.pg_advisory_lock(MIGRATION_LOCK_KEY)))
            workers = start_openers(url, 3)
            _wait_for(
                lambda: _advisory_waiters(lock) == 3 or any(w.poll() is not None for w in workers),
                timeout_s=120,
            )
            waiting = _advisory_waiters(lock)
            lock.execute(select(func.pg_advisory_unlock(MIGRATION_LOCK_KEY)))
        results = finish(workers)
        assert waiting == 3, f"not every worker queued on the lock: {results}"
        assert [code for code, _ in results] == [0, 0, 0], results
        assert recorded_versions(holder) == [SCHEMA_REVISION]
        assert log_tables(holder) == {"predictions", "labels"}
    finally:
        holder.dispose()
        drop_postgres_database(url)


def _advisory_waiters(connection: Connection) -> int:
    query = text(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
        "WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = current_database()"
    )
    return int(connection.execute(query).scalar_one())


def _wait_for(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)


def test_workers_that_start_together_on_sqlite_wait_for_one_migration(tmp_path: Path) -> None:
    """The test holds SQLite's write lock while the workers start; each then succeeds.

    SQLite shows no queue to wait for, hence the pause. Without ``BEGIN IMMEDIATE`` in
    ``migration_lock`` two of the three fail here: "table fraudops_alembic_version already
    exists".
    """
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    holder = create_log_engine(url)
    try:
        with holder.connect() as lock:
            lock.exec_driver_sql("BEGIN IMMEDIATE")
            workers = start_openers(url, 3)
            ready = [worker.stdout.readline() for worker in workers if worker.stdout]
            time.sleep(1.0)  # each is now queued on the write lock (busy timeout: 10 s)
            lock.rollback()
        results = finish(workers)
        assert ready == ["ready\n"] * 3, results
        assert [code for code, _ in results] == [0, 0, 0], results
        assert stored_revision(holder) == SCHEMA_REVISION
        assert log_tables(holder) == {"predictions", "labels"}
    finally:
        holder.dispose()
