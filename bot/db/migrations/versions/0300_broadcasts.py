"""Broadcasts, deliveries, clicks, sequence enrollments

Revision ID: 0300
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import bot.db.base

revision = "0300"
down_revision = "0001"
branch_labels = ("broadcasts",)
depends_on = None

BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql")
Timestamp = bot.db.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "broadcasts",
        sa.Column("id", BigInt, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("segment", Json, nullable=False),
        sa.Column("content", Json, nullable=False),
        sa.Column("send_at", Timestamp, nullable=True),
        sa.Column("quiet_hours", sa.Boolean(), nullable=False),
        sa.Column("sequence", sa.String(length=64), nullable=True),
        sa.Column("step", sa.String(length=64), nullable=True),
        sa.Column("prepared", sa.Boolean(), nullable=False),
        sa.Column("prepared_upto", BigInt, nullable=False),
        sa.Column("max_lead_id", BigInt, nullable=True),
        sa.Column("total", BigInt, nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=True),
        sa.Column("lease_until", Timestamp, nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("errors", Json, nullable=False),
        sa.Column("created_by", BigInt, nullable=True),
        sa.Column("progress_chat_id", BigInt, nullable=True),
        sa.Column("progress_message_id", BigInt, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("started_at", Timestamp, nullable=True),
        sa.Column("finished_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broadcasts")),
        sa.UniqueConstraint("sequence", "step", name=op.f("uq_broadcasts_sequence")),
    )
    with op.batch_alter_table("broadcasts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_broadcasts_state"), ["state"], unique=False)

    op.create_table(
        "broadcast_deliveries",
        sa.Column("id", BigInt, autoincrement=True, nullable=False),
        sa.Column("broadcast_id", BigInt, nullable=False),
        sa.Column("lead_id", BigInt, nullable=False),
        sa.Column("variant", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", BigInt, nullable=False),
        sa.Column("due_at", Timestamp, nullable=True),
        sa.Column("sent_at", Timestamp, nullable=True),
        sa.Column("tg_message_id", BigInt, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("replied_at", Timestamp, nullable=True),
        sa.Column("unsubscribed_at", Timestamp, nullable=True),
        sa.Column("converted_at", Timestamp, nullable=True),
        sa.ForeignKeyConstraint(["broadcast_id"], ["broadcasts.id"], name=op.f("fk_broadcast_deliveries_broadcast_id_broadcasts"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_broadcast_deliveries_lead_id_leads"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broadcast_deliveries")),
        sa.UniqueConstraint("broadcast_id", "lead_id", name=op.f("uq_broadcast_deliveries_broadcast_id")),
    )
    with op.batch_alter_table("broadcast_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_broadcast_deliveries_due", ["broadcast_id", "state", "due_at"], unique=False)
        batch_op.create_index("ix_broadcast_deliveries_lead_sent", ["lead_id", "sent_at"], unique=False)
        batch_op.create_index("ix_broadcast_deliveries_queue", ["broadcast_id", "state", "id"], unique=False)

    op.create_table(
        "broadcast_clicks",
        sa.Column("id", BigInt, autoincrement=True, nullable=False),
        sa.Column("delivery_id", BigInt, nullable=False),
        sa.Column("button", sa.String(length=32), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(["delivery_id"], ["broadcast_deliveries.id"], name=op.f("fk_broadcast_clicks_delivery_id_broadcast_deliveries"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broadcast_clicks")),
        sa.UniqueConstraint("delivery_id", "button", name=op.f("uq_broadcast_clicks_delivery_id")),
    )

    op.create_table(
        "sequence_enrollments",
        sa.Column("id", BigInt, autoincrement=True, nullable=False),
        sa.Column("sequence", sa.String(length=64), nullable=False),
        sa.Column("lead_id", BigInt, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("entered_at", Timestamp, nullable=False),
        sa.Column("exit_reason", sa.String(length=32), nullable=True),
        sa.Column("exited_at", Timestamp, nullable=True),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_sequence_enrollments_lead_id_leads"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sequence_enrollments")),
        sa.UniqueConstraint("sequence", "lead_id", name=op.f("uq_sequence_enrollments_sequence")),
    )
    with op.batch_alter_table("sequence_enrollments", schema=None) as batch_op:
        batch_op.create_index("ix_sequence_enrollments_due", ["sequence", "state", "entered_at"], unique=False)
        batch_op.create_index("ix_sequence_enrollments_lead_id", ["lead_id"], unique=False)


def downgrade() -> None:
    op.drop_table("sequence_enrollments")
    op.drop_table("broadcast_clicks")
    op.drop_table("broadcast_deliveries")
    op.drop_table("broadcasts")
