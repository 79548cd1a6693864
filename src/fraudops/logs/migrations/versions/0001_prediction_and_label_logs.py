"""The prediction and label logs as the code before migrations created them.

Revision 0001, the first. A database that already has these tables without a version table
is stamped at this revision rather than created again (``fraudops.logs.migrate``). The types
are written out here, not taken from ``fraudops.logs.tables``: a revision is frozen, the
tables module moves on with the code.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER only


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("transaction_id", sa.BigInteger(), nullable=False),
        sa.Column("logged_at", sa.DateTime(), nullable=False),
        sa.Column(
            "tx_datetime", sa.DateTime(), nullable=False, comment="the transaction's own clock"
        ),
        sa.Column("customer_hash", sa.String(32), nullable=False),
        sa.Column("terminal_hash", sa.String(32), nullable=False),
        sa.Column(
            "features", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("model_alias", sa.String(64), nullable=False),
        sa.Column(
            "arm", sa.String(64), nullable=False, comment="A/B arm of the request, also on shadows"
        ),
        sa.Column("is_shadow", sa.Boolean(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("decision", sa.Boolean(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.UniqueConstraint("request_id", "is_shadow", name="uq_predictions_request"),
    )
    op.create_index("ix_predictions_logged_at", "predictions", ["logged_at"])
    op.create_index("ix_predictions_tx_datetime", "predictions", ["tx_datetime"])
    op.create_index("ix_predictions_transaction_id", "predictions", ["transaction_id"])
    op.create_table(
        "labels",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("transaction_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "label", sa.SmallInteger(), sa.CheckConstraint("label IN (0, 1)"), nullable=False
        ),
        sa.Column("received_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_labels_transaction_received", "labels", ["transaction_id", "received_at"])


def downgrade() -> None:
    op.drop_table("labels")
    op.drop_table("predictions")
