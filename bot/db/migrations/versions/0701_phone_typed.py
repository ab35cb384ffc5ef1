"""Leads: whether the phone was only typed in the bot (it links nothing)

Revision ID: 0701
Revises: 0700
"""
from alembic import op
import sqlalchemy as sa

revision = "0701"
down_revision = "0700"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("phone_typed", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_column("phone_typed")
