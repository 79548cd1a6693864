"""Alembic's entry for the prediction log: run the revisions on the log's own version table.

``fraudops.logs.migrate`` hands over a connection that already holds the migration lock in
an open transaction. From the ``alembic`` command line (writing or trying a revision, see
docs/serving.md) this opens the log named by ``-x url=...``, else the settings' ``log_url``,
and takes the same lock.
"""

from __future__ import annotations

from alembic import context
from alembic.util import CommandError
from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError

from fraudops.logs.database import create_log_engine
from fraudops.logs.migrate import adopt_unversioned, migration_lock
from fraudops.logs.tables import VERSION_TABLE, metadata


def _ours(name: str | None, type_: str, _parents: object) -> bool:
    """Only the log's tables: autogenerate must not offer to drop the tables of another
    application (MLflow's, say) that shares the database."""
    return type_ != "table" or name in metadata.tables


def _run(connection: Connection) -> None:
    adopt_unversioned(connection, context.script)
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        include_name=_ours,
        # SQLite alters a table by copying it; batch mode lets a revision's ALTER run there.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    """The command line's ``-x url=...``, else the configured log (settings load only here)."""
    from fraudops.config import get_settings

    return context.get_x_argument(as_dictionary=True).get("url") or get_settings().log_url


def _main() -> None:
    if context.is_offline_mode():  # `alembic upgrade head --sql`: the DDL, for review
        context.configure(url=make_url(_url()), version_table=VERSION_TABLE, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    given = context.config.attributes.get("connection")
    if given is not None:
        _run(given)
        return
    url = _url()
    engine = create_log_engine(url)
    try:
        with migration_lock(engine) as connection:
            _run(connection)
    except (OperationalError, InterfaceError) as error:  # the CLI shows this without a traceback
        shown = make_url(url).render_as_string(hide_password=True)
        raise CommandError(f"cannot open the prediction log at {shown}: {error.orig}") from error
    finally:
        engine.dispose()


_main()
