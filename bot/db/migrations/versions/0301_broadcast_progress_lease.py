"""Broadcasts: the instance editing a broadcast's progress message holds it (two instances never both edit it)

Revision ID: 0301
Revises: 0300
"""
from alembic import op
import sqlalchemy as sa

import bot.db.base

revision = "0301"
down_revision = "0300"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("broadcasts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("progress_owner", sa.String(32), nullable=True))
        batch_op.add_column(sa.Column("progress_until", bot.db.base.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("broadcasts", schema=None) as batch_op:
        batch_op.drop_column("progress_until")
        batch_op.drop_column("progress_owner")
