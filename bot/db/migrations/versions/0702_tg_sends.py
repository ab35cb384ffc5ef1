"""The send outbox: messages to buyers that outlive a Telegram outage or a restart

Revision ID: 0702
Revises: 0701
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import bot.db.base

revision = "0702"
down_revision = "0701"
branch_labels = None
depends_on = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "tg_sends",
        sa.Column("id", BIGINT, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("lead_id", BIGINT, nullable=True),
        sa.Column("chat_id", BIGINT, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("reply_markup", sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"), nullable=True),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("attempts", BIGINT, nullable=False),
        sa.Column("not_before", bot.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("deadline", bot.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("owner", sa.String(length=32), nullable=True),
        sa.Column("lease_until", bot.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("tg_message_id", BIGINT, nullable=True),
        sa.Column("created_at", bot.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", bot.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_tg_sends_lead_id_leads"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tg_sends")),
    )
    op.create_index("ix_tg_sends_state_lease_until", "tg_sends", ["state", "lease_until"], unique=False)
    op.create_index(op.f("ix_tg_sends_lead_id"), "tg_sends", ["lead_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_tg_sends_lead_id"), table_name="tg_sends")
    op.drop_index("ix_tg_sends_state_lease_until", table_name="tg_sends")
    op.drop_table("tg_sends")
