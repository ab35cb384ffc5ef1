"""amoCRM chat channel: buyers' chats and managers' replies from amoCRM

Revision ID: 0800
Revises: 0100
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import bot.db.base

revision = "0800"
down_revision = "0100"
branch_labels = None
depends_on = None

BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql")
Timestamp = bot.db.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "amojo_chats",
        sa.Column("conversation_id", sa.String(length=64), nullable=False),
        sa.Column("lead_id", BigInt, nullable=False),
        sa.Column("chat_id", sa.String(length=64), nullable=True),
        sa.Column("user_id", sa.String(length=64), nullable=True),
        sa.Column("contact_id", BigInt, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_amojo_chats_lead_id_leads"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("conversation_id", name=op.f("pk_amojo_chats")),
    )
    op.create_index("ix_amojo_chats_lead_id", "amojo_chats", ["lead_id"], unique=False)
    op.create_table(
        "amojo_replies",
        sa.Column("id", BigInt, autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("conversation_id", sa.String(length=64), nullable=False),
        sa.Column("payload", Json, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", BigInt, nullable=False),
        sa.Column("next_attempt_at", Timestamp, nullable=True),
        sa.Column("claimed_at", Timestamp, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("done_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_amojo_replies")),
        sa.UniqueConstraint("message_id", name=op.f("uq_amojo_replies_message_id")),
    )
    op.create_index("ix_amojo_replies_state_next_attempt_at", "amojo_replies", ["state", "next_attempt_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_amojo_replies_state_next_attempt_at", table_name="amojo_replies")
    op.drop_table("amojo_replies")
    op.drop_index("ix_amojo_chats_lead_id", table_name="amojo_chats")
    op.drop_table("amojo_chats")
