"""Receiver: the Telegram webhook's secret token in the database; the inbox's per-chat index

Revision ID: 0920
Revises: 0702
"""
from alembic import op
import sqlalchemy as sa

import bot.db.base

revision = "0920"
down_revision = "0702"
branch_labels = ("receiver",)
depends_on = None

Timestamp = bot.db.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "telegram_webhook",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("secret_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_telegram_webhook")),
    )
    op.create_index("ix_tg_updates_chat_id_update_id", "tg_updates", ["chat_id", "update_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_tg_updates_chat_id_update_id", table_name="tg_updates")
    op.drop_table("telegram_webhook")
