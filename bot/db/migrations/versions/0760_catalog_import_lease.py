"""Catalogue: an import running holds a lease, so one whose process died is taken over or marked interrupted

Revision ID: 0760
Revises: 0750
"""
from alembic import op
import sqlalchemy as sa

import bot.db.base

revision = "0760"
down_revision = "0750"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("catalog_imports", sa.Column("lease_until", bot.db.base.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("catalog_imports", "lease_until")
