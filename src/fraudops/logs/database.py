"""Opening the prediction log: an engine tuned per backend, and the schema brought to head.

SQLite (a file in the state directory, WAL) is the default; PostgreSQL is for several workers
or hosts. Opening fails at once, naming the database, when it is away, so a server never
starts without a log; the schema is migrated before the engine is handed out
(``fraudops.logs.migrate``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, column, create_engine, event, inspect, select, table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError

from fraudops.logs.errors import PredictionLogSchemaError, PredictionLogUnavailableError
from fraudops.logs.tables import SCHEMA_REVISION, VERSION_TABLE

SQLITE_BUSY_TIMEOUT_S = 10.0
POSTGRES_CONNECT_TIMEOUT_S = 5


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
    """Connect and migrate the schema to head; fail now, clearly, if the database is away."""
    parsed = make_url(url)
    shown = parsed.render_as_string(hide_password=True)
    try:
        if parsed.get_backend_name() == "sqlite" and parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_log_engine(url)
    except OSError as error:
        raise _unavailable(shown, error) from error
    try:
        _migrate(engine)
    except (OSError, OperationalError, InterfaceError, PredictionLogSchemaError) as error:
        engine.dispose()
        raise _unavailable(shown, error) from error
    return engine


def _migrate(engine: Engine) -> None:
    """Bring the schema to this code's revision, importing Alembic only when it is behind."""
    if stored_revision(engine) == SCHEMA_REVISION:
        return
    from fraudops.logs.migrate import upgrade_to_head  # Alembic: a second of imports

    upgrade_to_head(engine)


def stored_revision(engine: Engine) -> str | None:
    """The schema revision the database records; None before the first migration."""
    with engine.connect() as connection:
        if not inspect(connection).has_table(VERSION_TABLE):
            return None
        versions = table(VERSION_TABLE, column("version_num"))
        return connection.execute(select(versions.c.version_num)).scalar()


def _unavailable(shown: str, error: Exception) -> PredictionLogUnavailableError:
    """The error to raise, naming the database (password hidden) and the driver's cause."""
    cause = getattr(error, "orig", None) or error
    kind = (
        PredictionLogSchemaError
        if isinstance(error, PredictionLogSchemaError)
        else PredictionLogUnavailableError
    )
    return kind(f"cannot open the prediction log at {shown}: {cause}".strip())
