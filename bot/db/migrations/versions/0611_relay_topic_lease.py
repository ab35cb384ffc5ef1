"""Operator chat: a relay worker's lease on a topic it creates or refreshes (two instances never both do)

Revision ID: 0611
Revises: 0610
"""
from alembic import op
import sqlalchemy as sa

import bot.db.base

revision = "0611"
down_revision = "0610"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("relay_topics", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_until", bot.db.base.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("relay_topics", schema=None) as batch_op:
        batch_op.drop_column("lease_until")
