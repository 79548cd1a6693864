"""Bring a prediction-log database to the newest schema revision, from many processes at once.

Every process that opens the log (each uvicorn worker, a flow, the CLI) runs
``upgrade_to_head`` before it reads or writes. The revisions live in ``migrations/`` and run
through Alembic, with a version table of our own (``tables.VERSION_TABLE``). Opening a log
already at ``tables.SCHEMA_REVISION`` does not import this module (``fraudops.logs.database``
checks the version row itself): Alembic, with Mako and Pygments, costs a second of start-up.

Several workers start at once, so the whole upgrade runs in one transaction that first takes
a lock: a PostgreSQL transaction-level advisory lock, or SQLite's write lock (``BEGIN
IMMEDIATE``). The first process migrates and commits; the others wait, then find the
database at head and do nothing. DDL is transactional on both backends, so a failed upgrade
leaves the schema as it was.

A database created before the migrations (the tables exist, the version table does not) is
recognised by its frozen shape and stamped at the baseline revision, keeping its rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, func, inspect, select

from fraudops.logs.errors import PredictionLogSchemaError
from fraudops.logs.tables import VERSION_TABLE

SCRIPTS = Path(__file__).with_name("migrations")
#: The revision that creates the schema the code before the migrations created.
BASELINE_REVISION = "0001"
#: One key in the server's advisory-lock space (per database): the bytes of "fraudlog".
MIGRATION_LOCK_KEY = int.from_bytes(b"fraudlog", "big")

#: The pre-migration schema, frozen: its tables, their columns, and their index and unique
#: constraint names. A database with these tables and no version table is at the baseline.
_UNVERSIONED_COLUMNS = {
    "predictions": {
        "id", "request_id", "transaction_id", "logged_at", "tx_datetime", "customer_hash",
        "terminal_hash", "features", "model_name", "model_version", "model_alias", "arm",
        "is_shadow", "score", "decision", "threshold", "latency_ms",
    },
    "labels": {"id", "transaction_id", "label", "received_at"},
}  # fmt: skip
_UNVERSIONED_NAMES = {
    "predictions": {
        "ix_predictions_logged_at",
        "ix_predictions_tx_datetime",
        "ix_predictions_transaction_id",
        "uq_predictions_request",
    },
    "labels": {"ix_labels_transaction_received"},
}


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for the log's revisions, without an ini file.

    With CONNECTION, ``migrations/env.py`` runs the revisions on it (inside the caller's
    locked transaction) instead of opening a database of its own.
    """
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade_to_head(engine: Engine) -> None:
    """Apply every revision the database lacks; a no-op, after a wait, when another did.

    A database at a revision this code does not know (newer code migrated it) is refused
    by name rather than touched.
    """
    try:
        with migration_lock(engine) as connection:
            command.upgrade(alembic_config(connection), "head")
    except CommandError as error:
        raise PredictionLogSchemaError(f"cannot migrate the log's schema: {error}") from error


@contextmanager
def migration_lock(engine: Engine) -> Iterator[Connection]:
    """A transaction that holds the log's schema for itself until it commits or rolls back.

    PostgreSQL: ``pg_advisory_xact_lock`` waits for any other holder and is released with
    the transaction. SQLite: pysqlite begins no transaction before DDL, so ``BEGIN
    IMMEDIATE`` is issued by hand; it takes the database's write lock (others wait up to
    the engine's busy timeout) and makes the DDL that follows one atomic unit.
    """
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
        elif connection.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        yield connection


def adopt_unversioned(connection: Connection, script: ScriptDirectory) -> None:
    """Stamp a pre-migration database at the baseline revision, after checking its shape.

    Tables named like the log's but of another shape raise ``PredictionLogSchemaError``
    rather than being stamped (a later revision would then fail half-way) or recreated
    (their rows would be lost).
    """
    inspector = inspect(connection)
    present = set(inspector.get_table_names())
    if VERSION_TABLE in present or not present & _UNVERSIONED_COLUMNS.keys():
        return
    problems = [
        problem
        for table in _UNVERSIONED_COLUMNS
        for problem in _shape_problems(connection, table, present)
    ]
    if problems:
        raise PredictionLogSchemaError(
            f"the log database has no {VERSION_TABLE} table and tables that are not the "
            f"log's earlier schema ({'; '.join(problems)}); nothing was changed"
        )
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    context.stamp(script, BASELINE_REVISION)


def _shape_problems(connection: Connection, table: str, present: set[str]) -> list[str]:
    """What keeps TABLE from being the pre-migration table of that name."""
    if table not in present:
        return [f"table {table} is missing"]
    inspector = inspect(connection)
    columns = {column["name"] for column in inspector.get_columns(table)}
    names = {index["name"] for index in inspector.get_indexes(table)} | {
        unique["name"] for unique in inspector.get_unique_constraints(table)
    }
    problems = []
    if columns != _UNVERSIONED_COLUMNS[table]:
        problems.append(f"{table} has columns {sorted(columns)}")
    if missing := _UNVERSIONED_NAMES[table] - names:
        problems.append(f"{table} lacks {sorted(missing)}")
    return problems
