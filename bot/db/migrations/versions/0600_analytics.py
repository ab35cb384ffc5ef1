"""Analytics: ad spend, weekly digests; what leads record for it (arrival path, first reply, furthest stage,
key-stage time, deal budget, task gap)

Revision ID: 0600
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

import bot.db.base

revision = "0600"
down_revision = "0001"
branch_labels = ("analytics",)
depends_on = None

BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = bot.db.base.UTCDateTime(timezone=True)

# The funnel as bot.funnel had it at this revision, frozen here (a migration does not follow later code): each stage's
# depth, a deal won as deep as «main_batch_sent»; the key stage is «test_batch_sent».
STAGES = ("new", "qualified", "catalog_sent", "test_batch_sent", "test_batch_received", "test_batch_approved",
          "main_batch_agreed", "main_batch_sent", "repeat_sale")
DEPTH = {**{name: n for n, name in enumerate(STAGES)}, "won": STAGES.index("main_batch_sent")}
KEY_DEPTH = DEPTH["test_batch_sent"]

# Leads from before: a website quiz behind them, else an ad link (a source without one), else cold.
ARRIVAL = """
UPDATE leads SET arrival = CASE
    WHEN EXISTS (SELECT 1 FROM quiz_submissions s WHERE s.lead_id = leads.id AND s.source = 'marquiz') THEN 'quiz'
    WHEN source IS NOT NULL THEN 'ad'
    ELSE 'cold' END
WHERE merged_into_id IS NULL
"""


def upgrade() -> None:
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deal_price", BigInt, nullable=True))
        batch_op.add_column(sa.Column("no_task_since", Timestamp, nullable=True))
        batch_op.add_column(sa.Column("arrival", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("first_reply_ms", BigInt, nullable=True))
        batch_op.add_column(sa.Column("furthest_stage", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("key_stage_at", Timestamp, nullable=True))
        batch_op.create_index("ix_leads_created_at", ["created_at"], unique=False)
    op.execute(ARRIVAL)
    _backfill_stages()
    with op.batch_alter_table("lead_events", schema=None) as batch_op:
        batch_op.drop_index("ix_lead_events_kind")
        batch_op.create_index("ix_lead_events_kind_created_at", ["kind", "created_at"], unique=False)

    op.create_table(
        "analytics_spend",
        sa.Column("id", BigInt, autoincrement=True, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("source", sa.String(length=128), nullable=False),
        sa.Column("campaign", sa.String(length=256), nullable=False),
        sa.Column("amount", BigInt, nullable=False),
        sa.Column("imported_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analytics_spend")),
        sa.UniqueConstraint("day", "source", "campaign", name=op.f("uq_analytics_spend_day")),
    )
    op.create_table(
        "analytics_digests",
        sa.Column("slot", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=True),
        sa.Column("lease_until", Timestamp, nullable=True),
        sa.Column("sent_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("slot", name=op.f("pk_analytics_digests")),
    )


def _backfill_stages() -> None:
    """How far each lead got, from its stage changes (amoCRM and the lead card) and its stage now."""
    leads = sa.table("leads", sa.column("id"), sa.column("stage"), sa.column("furthest_stage"), sa.column("key_stage_at"))
    events = sa.table("lead_events", sa.column("lead_id"), sa.column("kind"), sa.column("created_at", Timestamp),
                      sa.column("data", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")))
    stage = events.c.data["stage"].as_string()
    deeper = [name for name, n in DEPTH.items() if n >= KEY_DEPTH]
    moves = sa.and_(events.c.lead_id == leads.c.id, events.c.kind.in_(("crm_stage_changed", "stage_changed")))
    ranked = sa.case(DEPTH, value=stage, else_=-1)
    furthest = sa.select(stage).where(moves, ranked >= 0).order_by(ranked.desc()).limit(1).scalar_subquery()
    first_key = sa.select(sa.func.min(events.c.created_at)).where(moves, stage.in_(deeper)).scalar_subquery()
    op.execute(leads.update().values(furthest_stage=sa.func.coalesce(furthest, sa.case((leads.c.stage.in_(STAGES), leads.c.stage))),
                                     key_stage_at=first_key))


def downgrade() -> None:
    op.drop_table("analytics_digests")
    op.drop_table("analytics_spend")
    with op.batch_alter_table("lead_events", schema=None) as batch_op:
        batch_op.drop_index("ix_lead_events_kind_created_at")
        batch_op.create_index("ix_lead_events_kind", ["kind"], unique=False)
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_index("ix_leads_created_at")
        batch_op.drop_column("key_stage_at")
        batch_op.drop_column("furthest_stage")
        batch_op.drop_column("first_reply_ms")
        batch_op.drop_column("arrival")
        batch_op.drop_column("no_task_since")
        batch_op.drop_column("deal_price")
