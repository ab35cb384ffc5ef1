"""Operator chat: posts waiting for their turn in an operator group (the group's rate limit)

Revision ID: 0910
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import bot.db.base

revision = "0910"
down_revision = "0001"
branch_labels = ("relay_posts",)
depends_on = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "relay_posts",
        sa.Column("id", BIGINT, autoincrement=True, nullable=False),
        sa.Column("chat_id", BIGINT, nullable=False),
        sa.Column("lead_id", BIGINT, nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("urgent", sa.Boolean(), nullable=False),
        sa.Column("payload", sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"), nullable=False),
        sa.Column("owner", sa.String(length=32), nullable=True),
        sa.Column("lease_until", bot.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("attempts", BIGINT, nullable=False),
        sa.Column("created_at", bot.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_relay_posts_lead_id_leads"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_relay_posts")),
    )
    op.create_index("ix_relay_posts_chat_id_urgent_id", "relay_posts", ["chat_id", "urgent", "id"], unique=False)
    op.create_index(op.f("ix_relay_posts_lead_id"), "relay_posts", ["lead_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_relay_posts_lead_id"), table_name="relay_posts")
    op.drop_index("ix_relay_posts_chat_id_urgent_id", table_name="relay_posts")
    op.drop_table("relay_posts")
