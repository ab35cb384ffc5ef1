"""Who a Telegram user is: attaching the Telegram identity to a lead and merging duplicate leads."""
from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import Lead, LeadEvent, Message, QuizSubmission, TestBatchRequest
from bot.funnel import STAGES, absorb
from bot.inbound import Visitor
from bot.journal import LEAD_MERGED, Journal

_COPIED = ("company", "email", "source", "crm_lead_id", "crm_contact_id",
           "crm_status_id", "crm_pipeline_id", "responsible_user_id", "quiz_completed_at")


def attach_telegram(lead: Lead, visitor: Visitor) -> None:
    """Give ``lead`` this Telegram identity; names from the quiz are kept."""
    lead.tg_user_id = visitor.tg_user_id
    lead.tg_username = visitor.username
    if not lead.first_name:
        lead.first_name, lead.last_name = visitor.first_name, visitor.last_name


def split_name(name: str | None) -> tuple[str | None, str | None]:
    """``"Анна Петрова"`` → ``("Анна", "Петрова")``."""
    parts = (name or "").split(maxsplit=1)
    return (parts[0] if parts else None, parts[1] if len(parts) > 1 else None)


async def merge(session: AsyncSession, journal: Journal, survivor: Lead, other: Lead) -> None:
    """Fold ``other`` (a website quiz lead) into ``survivor`` (the Telegram lead).

    The conversation, events and submissions move; the quiz name and answers win; contacts and
    CRM ids the survivor lacks are copied; ``other`` stays as a tombstone pointing to the survivor.
    """
    from_crm_lead_id = other.crm_lead_id
    for model in (Message, LeadEvent, QuizSubmission, TestBatchRequest):
        await session.execute(update(model).where(model.lead_id == other.id).values(lead_id=survivor.id))
    for name in _COPIED:
        if getattr(survivor, name) is None and getattr(other, name) is not None:
            setattr(survivor, name, getattr(other, name))
    if other.phone and (survivor.phone is None or (survivor.phone_typed and not other.phone_typed)):
        survivor.phone, survivor.phone_typed = other.phone, other.phone_typed  # a confirmed phone beats a typed one
    if other.first_name:  # the name typed into the quiz beats the Telegram display name
        survivor.first_name, survivor.last_name = other.first_name, other.last_name
    if other.interests:
        survivor.interests = {**survivor.interests, **other.interests}
    if not survivor.utm and other.utm:
        survivor.utm = other.utm
    if other.stage in STAGES and (survivor.stage not in STAGES or STAGES.index(other.stage) > STAGES.index(survivor.stage)):
        survivor.stage = other.stage
    absorb(survivor, other)
    survivor.tags = sorted(set(survivor.tags) | set(other.tags))
    other.merged_into_id = survivor.id
    other.crm_lead_id = other.crm_contact_id = None
    other.phone = None
    await journal.event(session, survivor, LEAD_MERGED, from_lead_id=other.id, from_crm_lead_id=from_crm_lead_id)
