"""Operator chat: lead topics, relayed-message map, answer waits (SLA)

Revision ID: 0200
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

import bot.db.base

revision = "0200"
down_revision = "0001"
branch_labels = ("relay",)
depends_on = None

BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = bot.db.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "relay_topics",
        sa.Column("lead_id", BigInt, autoincrement=False, nullable=False),
        sa.Column("chat_id", BigInt, nullable=False),
        sa.Column("thread_id", BigInt, nullable=True),
        sa.Column("card_message_id", BigInt, nullable=True),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("card_hash", sa.String(length=64), nullable=False),
        sa.Column("is_closed", sa.Boolean(), nullable=False),
        sa.Column("stale", sa.Boolean(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_relay_topics_lead_id_leads"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("lead_id", name=op.f("pk_relay_topics")),
    )
    with op.batch_alter_table("relay_topics", schema=None) as batch_op:
        batch_op.create_index("ix_relay_topics_chat_id_thread_id", ["chat_id", "thread_id"], unique=True)

    op.create_table(
        "relay_links",
        sa.Column("id", BigInt, autoincrement=True, nullable=False),
        sa.Column("lead_id", BigInt, nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("buyer_chat_id", BigInt, nullable=False),
        sa.Column("buyer_message_id", BigInt, nullable=False),
        sa.Column("operator_chat_id", BigInt, nullable=False),
        sa.Column("operator_message_id", BigInt, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_relay_links_lead_id_leads"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_relay_links")),
    )
    with op.batch_alter_table("relay_links", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_relay_links_lead_id"), ["lead_id"], unique=False)
        batch_op.create_index("ix_relay_links_buyer_chat_id_buyer_message_id", ["buyer_chat_id", "buyer_message_id"], unique=False)
        batch_op.create_index("ix_relay_links_operator_chat_id_operator_message_id", ["operator_chat_id", "operator_message_id"], unique=False)

    op.create_table(
        "relay_waits",
        sa.Column("id", BigInt, autoincrement=True, nullable=False),
        sa.Column("lead_id", BigInt, nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("due_at", Timestamp, nullable=False),
        sa.Column("escalate_at", Timestamp, nullable=False),
        sa.Column("level", BigInt, nullable=False),
        sa.Column("closed_at", Timestamp, nullable=True),
        sa.Column("answered_by", BigInt, nullable=True),
        sa.Column("answered_by_name", sa.String(length=256), nullable=True),
        sa.Column("response_seconds", BigInt, nullable=True),
        sa.Column("dismissed", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_relay_waits_lead_id_leads"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_relay_waits")),
    )
    with op.batch_alter_table("relay_waits", schema=None) as batch_op:
        batch_op.create_index("ix_relay_waits_open_lead_id", ["lead_id"], unique=True,
                              sqlite_where=sa.text("closed_at IS NULL"), postgresql_where=sa.text("closed_at IS NULL"))
        batch_op.create_index("ix_relay_waits_closed_at", ["closed_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("relay_waits", schema=None) as batch_op:
        batch_op.drop_index("ix_relay_waits_closed_at")
        batch_op.drop_index("ix_relay_waits_open_lead_id")
    op.drop_table("relay_waits")
    with op.batch_alter_table("relay_links", schema=None) as batch_op:
        batch_op.drop_index("ix_relay_links_operator_chat_id_operator_message_id")
        batch_op.drop_index("ix_relay_links_buyer_chat_id_buyer_message_id")
        batch_op.drop_index(batch_op.f("ix_relay_links_lead_id"))
    op.drop_table("relay_links")
    with op.batch_alter_table("relay_topics", schema=None) as batch_op:
        batch_op.drop_index("ix_relay_topics_chat_id_thread_id")
    op.drop_table("relay_topics")
