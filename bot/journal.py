"""The journal: lead events and the conversation log, written in the caller's transaction.

Subscribers (the amoCRM outbox, SLA tracking, sequences) are called inside the same
transaction, so whatever they enqueue commits or rolls back together with the event; so does the
handled mark of the Telegram update being handled (:func:`bot.db.updates.settle`): an update whose
records committed is never handled again.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.db import updates
from bot.db.base import utcnow
from bot.db.models import Lead, LeadEvent, Message
from bot.funnel import reach

Record = LeadEvent | Message
Subscriber = Callable[[AsyncSession, Lead, Record], Awaitable[None]]

# Event kinds (the CRM maps them to stages, notes and tasks: bot/crm/crm.yaml). The lead journey's:
LEAD_CREATED = "lead_created"
QUIZ_COMPLETED = "quiz_completed"
GREETED = "greeted"
CATALOG_SENT = "catalog_sent"
CALLBACK_REQUESTED = "callback_requested"
QUESTION_ASKED = "question_asked"
TEST_BATCH_REQUESTED = "test_batch_requested"
PHONE_SHARED = "phone_shared"
LEAD_MERGED = "lead_merged"
BLOCKED = "blocked"
UNSUBSCRIBED = "unsubscribed"
RESUBSCRIBED = "resubscribed"
# Event kinds of the operator chat.
STAGE_CHANGED = "stage_changed"  # a manager picked a stage on the lead card: {stage, previous, manager}
BANNED, UNBANNED = "banned", "unbanned"  # {manager}
SLA_BREACHED = "sla_breached"  # an overdue answer: {level, minutes, manager, responsible_user_id}; level 2 is the head of sales'
# Event kinds of the amoCRM sync.
CRM_STAGE_CHANGED = "crm_stage_changed"  # the deal moved in amoCRM: {stage, previous, status_id, pipeline_id, source, fields}
STAGE_EVENTS = (CRM_STAGE_CHANGED, STAGE_CHANGED)
CRM_TASK_CHANGED = "crm_task_changed"  # a REMINDER_TASK_TYPE task on the deal: {task_id, text, complete_till (unix), state, source}
TASK_OPEN, TASK_COMPLETED, TASK_DELETED = "open", "completed", "deleted"  # its state
# Event kinds of the follow-ups (bot/followups): what the buyer was sent after a stage move, or why not.
FOLLOWUP_SENT = "followup_sent"  # {followup (its kind), key, stage}
FOLLOWUP_SKIPPED = "followup_skipped"  # {followup, key, stage, reason}: blocked, stale (the deal moved on), cancelled
TEST_BATCH_RATED = "test_batch_rated"  # the survey after the test batch: {rating, test_batch_rating}
TEST_BATCH_COMMENTED = "test_batch_commented"  # … what the buyer would change: {comment, test_batch_comment}
TEST_BATCH_UNHAPPY = "test_batch_unhappy"  # a rating of 3 or less: {rating}
MAIN_BATCH_NUDGE = "main_batch_nudge"  # rated 4–5 and no main batch agreed days later: {rating, days}
REORDER_REQUESTED = "reorder_requested"  # «Повторить заказ» under the reorder offer: {followup, new_products}
REORDER_SNOOZED = "reorder_snoozed"  # «Пока не нужно»: {days}
REQUIRED_DATA_RECEIVED = "required_data_received"  # what a stage requires, all in: {for_stage, delivery_city, company_name, inn, contact_phone}  # {stage, previous}: the lead's furthest stage is kept up to date


class Journal:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    async def _publish(self, session: AsyncSession, lead: Lead, record: Record) -> None:
        for subscriber in self._subscribers:
            await subscriber(session, lead, record)

    async def event(self, session: AsyncSession, lead: Lead, kind: str, **data: Any) -> LeadEvent:
        """Record a funnel event for ``lead``."""
        record = LeadEvent(lead_id=lead.id, kind=kind, data=data)
        if kind in STAGE_EVENTS:
            reach(lead, data.get("stage"), record.created_at)
        session.add(record)
        await session.flush()
        await self._publish(session, lead, record)
        await updates.settle(session)
        return record

    async def message(
        self,
        session: AsyncSession,
        lead: Lead,
        *,
        direction: str,
        author: str,
        text: str | None,
        kind: str = "text",
        author_name: str | None = None,
        tg_chat_id: int | None = None,
        tg_message_id: int | None = None,
        is_internal: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> Message:
        """Log one message in (``"in"``) or out (``"out"``) of the conversation."""
        record = Message(
            lead_id=lead.id,
            direction=direction,
            author=author,
            author_name=author_name,
            kind=kind,
            text=text,
            tg_chat_id=tg_chat_id,
            tg_message_id=tg_message_id,
            is_internal=is_internal,
            meta=meta or {},
        )
        now = utcnow()
        if direction == "in":
            lead.last_inbound_at = now
        elif author != "broadcast":
            lead.last_outbound_at = now
            if author == "manager" and not is_internal:
                lead.awaiting_reply_since = None
        session.add(record)
        await session.flush()
        await self._publish(session, lead, record)
        await updates.settle(session)
        return record
