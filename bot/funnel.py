"""The local funnel: stage keys in order (the seed's two amoCRM pipelines), moved only forward by the bot."""
from __future__ import annotations

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


def advance(lead: Lead, stage: str) -> bool:
    """Move ``lead`` to ``stage`` if that is further down the funnel; True if it moved."""
    if lead.stage in CLOSED or stage not in STAGES:
        return False
    current = STAGES.index(lead.stage) if lead.stage in STAGES else -1
    if STAGES.index(stage) <= current:
        return False
    lead.stage = stage
    return True
