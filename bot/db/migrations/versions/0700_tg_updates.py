"""The durable inbox: every Telegram update stored before it is acknowledged

Revision ID: 0700
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

import bot.db.base

revision = "0700"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tg_updates",
        sa.Column("update_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=False, nullable=False),
        sa.Column("chat_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("received_at", bot.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("handled_at", bot.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("owner", sa.String(length=32), nullable=True),
        sa.Column("lease_until", bot.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("update_id", name=op.f("pk_tg_updates")),
    )
    op.create_index("ix_tg_updates_handled_at_lease_until", "tg_updates", ["handled_at", "lease_until"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_tg_updates_handled_at_lease_until", table_name="tg_updates")
    op.drop_table("tg_updates")
