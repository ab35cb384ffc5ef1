"""Follow-ups: the buyer is told when their deal enters a stage (``STAGE_MESSAGES``).

Stage moves are learnt from the journal (amoCRM webhooks and reconcile, a manager's pick on the lead card): in
the event's transaction a row is added to ``followups`` under a unique key per deal and stage, so a duplicate
or repeated move adds nothing. A :class:`~bot.loops.Loop` claims due rows through the database (two instances
never send one twice), holds them through the buyer's quiet hours, skips buyers who blocked the bot, sends,
logs the message (the CRM outbox makes it a note) and copies it to the lead's operator topic.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog
from aiogram.exceptions import TelegramAPIError, TelegramRetryAfter
from aiogram.types import Message as TgMessage
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.db.base import utcnow
from bot.db.models import Lead, LeadEvent
from bot.followups import store
from bot.followups.config import StageMessages, load_stage_messages
from bot.followups.models import DONE, FAILED, SKIPPED, STAGE, FollowUp
from bot.funnel import depth
from bot.hours import QuietHours, zone_of
from bot.journal import FOLLOWUP_SENT, FOLLOWUP_SKIPPED, STAGE_EVENTS, Journal, Record
from bot.loops import Loop, Worker
from bot.messenger import BuyerUnreachable, Messenger
from bot.ports import OperatorTopic
from bot.texts import Safe, t

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
POLL = 5.0  # seconds between rounds (a stage move wakes the loop at once)
LEASE = timedelta(minutes=2)  # a claimed row another instance may take over after this
BATCH = 20
MAX_ATTEMPTS = 5
RETRY = timedelta(minutes=1)  # after a transient Telegram error, doubling


class FollowUps:
    """``on_record`` goes to ``Journal.subscribe``, ``workers`` to the app."""

    def __init__(self, settings: Settings, db: async_sessionmaker[AsyncSession], journal: Journal, messenger: Messenger, *,
                 topic: OperatorTopic | None = None, clock: Clock = utcnow, messages: StageMessages | None = None) -> None:
        self.db = db
        self.journal = journal
        self.messenger = messenger
        self.topic = topic
        self.clock = clock
        self.messages = messages or load_stage_messages(settings.stage_messages)
        self.quiet = QuietHours.parse(settings.quiet_hours)
        self.timezone = settings.timezone
        self.lang = settings.default_language  # the managers'
        self.wake = asyncio.Event()
        self.loop = Loop("followups", self.tick, every=POLL, wake=self.wake)
        self.workers: list[Worker] = [self.loop.run]

    # ------------------------------------------------------------- scheduling
    async def on_record(self, session: AsyncSession, lead: Lead, record: Record) -> None:
        """Journal subscriber: a stage move with a message schedules it (once per deal and stage)."""
        if not isinstance(record, LeadEvent) or record.kind not in STAGE_EVENTS:
            return
        stage = record.data.get("stage")
        if not self.messages.has(stage) or depth(stage) < depth(lead.furthest_stage):
            return  # no message, or a late webhook of a stage the deal has passed
        deal = f"D{lead.crm_lead_id}" if lead.crm_lead_id else f"L{lead.id}"
        now = self.clock()
        added = await store.schedule(session, lead_id=lead.id, kind=STAGE, key=f"stage:{deal}:{stage}", due_at=now, now=now,
                                     stage=stage, data={"fields": record.data.get("fields") or {}})
        if added:
            event.listen(session.sync_session, "after_commit", lambda _: self.wake.set(), once=True)

    # ---------------------------------------------------------------- sending
    async def tick(self) -> bool:
        """One round: claim what is due and deliver it; True when more may be waiting."""
        async with self.db.begin() as session:
            rows = await store.claim_due(session, self.clock(), LEASE, BATCH)
        for row in rows:
            await self._handle(row)
        return len(rows) == BATCH

    async def _handle(self, row: FollowUp) -> None:
        now = self.clock()
        if row.lease_until is None or now >= row.lease_until:
            return  # this claim lapsed (a slow round): another instance may hold the row now
        async with self.db() as session:
            lead = await session.get(Lead, row.lead_id)
            if row.attempts > 1 and await store.was_sent(session, row.lead_id, row.key):
                await self._finish(row, DONE, sent_at=now)  # its instance died after sending
                return
        if lead is None or lead.merged_into_id is not None or lead.tg_user_id is None:
            await self._finish(row, SKIPPED, reason="no chat with the buyer")
        elif lead.is_blocked:
            await self._skip_blocked(row, lead)
        elif depth(lead.furthest_stage) > depth(row.stage):
            await self._skip(row, lead, "stale: the deal has moved on")
        elif self.quiet and (until := self.quiet.until(now, zone_of((lead.interests or {}).get("city"), self.timezone))):
            async with self.db.begin() as session:
                await store.postpone(session, row, until, reason="quiet hours")
        else:
            await self._send(row, lead)

    async def _send(self, row: FollowUp, lead: Lead) -> None:
        text = self.messages.render(row.stage or "", lead.language, lead_values(lead), row.data.get("fields") or {})
        try:
            sent = await self.deliver(lead, text)
        except BuyerUnreachable:
            await self._skip_blocked(row, lead)  # the messenger flagged the buyer
            return
        except TelegramRetryAfter as exc:
            await self._retry(row, timedelta(seconds=exc.retry_after), str(exc))
            return
        except TelegramAPIError as exc:
            await self._retry(row, RETRY * 2 ** (row.attempts - 1), str(exc))
            return
        async with self.db.begin() as session:
            await self.messenger.log_out(lead.id, kind="text", text=sent.text or text, tg_message_id=sent.message_id,
                                         meta={"followup": row.key}, session=session)
            fresh = await session.get(Lead, lead.id)
            await self.journal.event(session, fresh, FOLLOWUP_SENT, followup=row.kind, key=row.key, stage=row.stage)
            await store.finish(session, row, DONE, sent_at=self.clock())
        log.info("followup.sent", lead_id=lead.id, key=row.key)
        await self._tell_managers(lead, t(self.lang, "followups.topic.sent", stage=self._stage(row.stage), text=Safe(text)))

    async def deliver(self, lead: Lead, text: str) -> TgMessage:
        """The one place a follow-up reaches Telegram (logged by the caller, with its key)."""
        return await self.messenger.send_text(lead, text, log=False)

    async def _retry(self, row: FollowUp, delay: timedelta, error: str) -> None:
        log.warning("followup.send_failed", followup_id=row.id, attempts=row.attempts, error=error)
        if row.attempts >= MAX_ATTEMPTS:
            await self._finish(row, FAILED, reason=error[:256])
            return
        async with self.db.begin() as session:
            await store.postpone(session, row, self.clock() + delay, reason=error[:256])

    async def _skip_blocked(self, row: FollowUp, lead: Lead) -> None:
        await self._skip(row, lead, "blocked")
        await self._tell_managers(lead, t(self.lang, "followups.topic.blocked", stage=self._stage(row.stage)))

    async def _skip(self, row: FollowUp, lead: Lead, reason: str) -> None:
        async with self.db.begin() as session:
            fresh = await session.get(Lead, lead.id)
            await self.journal.event(session, fresh, FOLLOWUP_SKIPPED, followup=row.kind, key=row.key, stage=row.stage, reason=reason)
            await store.finish(session, row, SKIPPED, reason=reason)
        log.info("followup.skipped", lead_id=lead.id, key=row.key, reason=reason)

    async def _finish(self, row: FollowUp, state: str, *, reason: str | None = None, sent_at: datetime | None = None) -> None:
        async with self.db.begin() as session:
            await store.finish(session, row, state, reason=reason, sent_at=sent_at)

    async def _tell_managers(self, lead: Lead, text: str) -> None:
        if self.topic is None:
            return
        try:
            await self.topic.notice(lead, text)
        except TelegramAPIError as exc:
            log.error("followup.topic_failed", lead_id=lead.id, error=str(exc))

    def _stage(self, stage: str | None) -> str:
        return t(self.lang, f"followups.stages.{stage}") if stage else ""


def lead_values(lead: Lead) -> dict[str, str]:
    """What a template knows of the buyer (escaped by the template)."""
    name = " ".join(p for p in (lead.first_name, lead.last_name) if p)
    return {"first_name": lead.first_name or "", "last_name": lead.last_name or "", "name": name,
            "company": lead.company or "", "city": str((lead.interests or {}).get("city") or "")}
