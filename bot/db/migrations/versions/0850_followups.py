"""Follow-ups: messages due to buyers (stage messages), one per key, claimed through the database

Revision ID: 0850
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

from bot.db.base import BigInt, JSONType, UTCDateTime

revision = "0850"
down_revision = "0001"
branch_labels = ("followups",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "followups",
        sa.Column("id", BigInt, autoincrement=True, nullable=False),
        sa.Column("lead_id", BigInt, sa.ForeignKey("leads.id", ondelete="CASCADE", name="fk_followups_lead_id_leads"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("key", sa.String(160), nullable=False),
        sa.Column("stage", sa.String(64), nullable=True),
        sa.Column("data", JSONType, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.Column("attempts", BigInt, nullable=False),
        sa.Column("reason", sa.String(256), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_followups"),
        sa.UniqueConstraint("key", name="uq_followups_key"),
    )
    op.create_index("ix_followups_lead_id", "followups", ["lead_id"])
    op.create_index("ix_followups_state_due_at", "followups", ["state", "due_at"])


def downgrade() -> None:
    op.drop_table("followups")
