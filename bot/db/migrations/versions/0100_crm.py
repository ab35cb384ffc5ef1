"""amoCRM outbox

Revision ID: 0100
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import bot.db.base

revision = "0100"
down_revision = "0001"
branch_labels = ("crm",)
depends_on = None

BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql")
Timestamp = bot.db.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "crm_outbox",
        sa.Column("id", BigInt, autoincrement=True, nullable=False),
        sa.Column("lead_id", BigInt, nullable=False),
        sa.Column("op", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=True),
        sa.Column("payload", Json, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", BigInt, nullable=False),
        sa.Column("uncertain", sa.Boolean(), nullable=False),
        sa.Column("next_attempt_at", Timestamp, nullable=True),
        sa.Column("claimed_by", sa.String(length=128), nullable=True),
        sa.Column("claimed_at", Timestamp, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("result", Json, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("done_at", Timestamp, nullable=True),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_crm_outbox_lead_id_leads"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_outbox")),
    )
    with op.batch_alter_table("crm_outbox", schema=None) as batch_op:
        batch_op.create_index("ix_crm_outbox_lead_id_id", ["lead_id", "id"], unique=False)
        batch_op.create_index("ix_crm_outbox_state_next_attempt_at", ["state", "next_attempt_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("crm_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_crm_outbox_state_next_attempt_at")
        batch_op.drop_index("ix_crm_outbox_lead_id_id")
    op.drop_table("crm_outbox")
