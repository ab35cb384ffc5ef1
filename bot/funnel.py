"""The local funnel: stage keys in order (the seed's two amoCRM pipelines), moved only forward by the bot,
and how far each lead ever got (analytics count from the key stage, whatever happened to the deal later)."""
from __future__ import annotations

from datetime import datetime

from bot.db.models import Lead

# «Привлечение», then «Тестовая партия»; amoCRM webhooks may set any stage, the bot only advances.
STAGES = (
    "new",
    "qualified",
    "catalog_sent",
    "test_batch_sent",
    "test_batch_received",
    "test_batch_approved",
    "main_batch_agreed",
    "main_batch_sent",
    "repeat_sale",
)
CLOSED = ("won", "lost")
# The key stage: everything is measured from it (the seed's «Тестовая партия отправлена»).
KEY_STAGE = "test_batch_sent"
# A deal amoCRM closed as won was sold: it counts as having got this far.
SOLD_STAGE = "main_batch_sent"


def depth(stage: str | None) -> int:
    """How far down the funnel ``stage`` is: its place in STAGES, won as SOLD_STAGE, anything else -1."""
    stage = SOLD_STAGE if stage == "won" else stage
    return STAGES.index(stage) if stage in STAGES else -1


def reach(lead: Lead, stage: str | None, at: datetime) -> None:
    """``lead`` got to ``stage`` at ``at``: remember the furthest stage and when it first reached the key stage."""
    if depth(stage) > depth(lead.furthest_stage):
        lead.furthest_stage = stage
    if depth(stage) >= depth(KEY_STAGE) and (lead.key_stage_at is None or at < lead.key_stage_at):
        lead.key_stage_at = at


def absorb(survivor: Lead, other: Lead) -> None:
    """``other`` is merged into ``survivor``: how far either got."""
    if other.furthest_stage is not None:
        reach(survivor, other.furthest_stage, other.key_stage_at or other.created_at)


def advance(lead: Lead, stage: str) -> bool:
    """Move ``lead`` to ``stage`` if that is further down the funnel; True if it moved."""
    if lead.stage in CLOSED or stage not in STAGES:
        return False
    current = STAGES.index(lead.stage) if lead.stage in STAGES else -1
    if STAGES.index(stage) <= current:
        return False
    lead.stage = stage
    return True
