"""Operator chat: whether a question came within working hours; waits by start (analytics)

Revision ID: 0610
Revises: 0200
"""
from alembic import op
import sqlalchemy as sa

revision = "0610"
down_revision = "0200"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("relay_waits", schema=None) as batch_op:
        batch_op.add_column(sa.Column("in_hours", sa.Boolean(), nullable=True))
        batch_op.create_index("ix_relay_waits_started_at", ["started_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("relay_waits", schema=None) as batch_op:
        batch_op.drop_index("ix_relay_waits_started_at")
        batch_op.drop_column("in_hours")
