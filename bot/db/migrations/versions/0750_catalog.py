"""Catalogue imports: history, scheduled refresh slots, uploads waiting to be applied

Revision ID: 0750
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

import bot.db.base

revision = "0750"
down_revision = "0001"
branch_labels = ("catalog",)
depends_on = None

Timestamp = bot.db.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "catalog_imports",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("slot", sa.String(length=64), nullable=True),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=512), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=True),
        sa.Column("etag", sa.String(length=256), nullable=True),
        sa.Column("last_modified", sa.String(length=64), nullable=True),
        sa.Column("report", sa.Text(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("finished_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("slot"),
    )


def downgrade() -> None:
    op.drop_table("catalog_imports")
