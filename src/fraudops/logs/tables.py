"""The prediction log's tables as the code reads and writes them today (the newest revision).

The database gets them from the Alembic revisions in ``migrations/versions``, never from
``metadata.create_all``: a log outlives the code that created it, and only a migration can
bring an existing table up to a new shape. ``tests/integration/test_log_migrations.py``
checks that the revisions and these definitions describe the same schema.

Features are stored as one JSON document per row rather than a column each: the feature set
follows ``params.yaml`` (window lengths), and a JSON column lets rows of two feature sets
share the table without a migration; monitoring reads whole windows and spreads them into
columns (``fraudops.logs.readers``), so nothing needs to filter on a feature inside SQL.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeDecorator

from fraudops.timestamps import naive_utc


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Wall-clock instants stored as naive UTC, read back as aware UTC, on every backend.

    SQLite has no time zone type; storing UTC everywhere keeps range queries identical on
    SQLite and PostgreSQL. A naive value is refused: its zone would be a guess.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"{value!r} has no time zone; pass an aware datetime (UTC)")
        return naive_utc(value)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


#: The Alembic revision whose schema these definitions describe, and the table that records a
#: database's revision (not Alembic's default ``alembic_version``: MLflow keeps its own
#: revision there, and a log may share MLflow's database). A database at this revision is
#: opened without loading Alembic; a test checks that it is the head of ``migrations/``.
SCHEMA_REVISION = "0001"
VERSION_TABLE = "fraudops_alembic_version"

_Id = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER keys only

metadata = MetaData()

predictions = Table(
    "predictions",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False),
    Column("transaction_id", BigInteger, nullable=False),
    Column("logged_at", UtcDateTime, nullable=False),
    Column("tx_datetime", DateTime, nullable=False, comment="the transaction's own clock"),
    Column("customer_hash", String(32), nullable=False),
    Column("terminal_hash", String(32), nullable=False),
    Column("features", JSON().with_variant(postgresql.JSONB, "postgresql"), nullable=False),
    Column("model_name", String(128), nullable=False),
    Column("model_version", String(32), nullable=False),
    Column("model_alias", String(64), nullable=False),
    Column("arm", String(64), nullable=False, comment="A/B arm of the request, also on shadows"),
    Column("is_shadow", Boolean, nullable=False),
    Column("score", Float, nullable=False),
    Column("decision", Boolean, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("latency_ms", Float, nullable=False),
    UniqueConstraint("request_id", "is_shadow", name="uq_predictions_request"),
    Index("ix_predictions_logged_at", "logged_at"),
    Index("ix_predictions_tx_datetime", "tx_datetime"),
    Index("ix_predictions_transaction_id", "transaction_id"),
)

labels = Table(
    "labels",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("transaction_id", BigInteger, nullable=False),
    Column("label", SmallInteger, CheckConstraint("label IN (0, 1)"), nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Index("ix_labels_transaction_received", "transaction_id", "received_at"),
)
