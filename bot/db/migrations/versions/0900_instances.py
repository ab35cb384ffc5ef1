"""Instances: every running ``optobot run`` and its heartbeat

Revision ID: 0900
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

import bot.db.base

revision = "0900"
down_revision = "0001"
branch_labels = ("instances",)
depends_on = None

Timestamp = bot.db.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("seen_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instances")),
    )
    op.create_index(op.f("ix_instances_seen_at"), "instances", ["seen_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_instances_seen_at"), table_name="instances")
    op.drop_table("instances")
