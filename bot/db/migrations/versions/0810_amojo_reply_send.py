"""amoCRM chat: a manager's reply keeps the send outbox record of its text

Revision ID: 0810
Revises: 0800
"""
from alembic import op
import sqlalchemy as sa

revision = "0810"
down_revision = "0800"
branch_labels = None
depends_on = None

BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("amojo_replies", sa.Column("send_id", BigInt, nullable=True))


def downgrade() -> None:
    op.drop_column("amojo_replies", "send_id")
