"""Follow-ups: the buyer is told when their deal enters a stage (``STAGE_MESSAGES``) and asked how the test batch went.

Stage moves are learnt from the journal (amoCRM webhooks and reconcile, a manager's pick on the lead card): in
the event's transaction a row is added to ``followups`` under a unique key per deal and stage, so a duplicate
or repeated move adds nothing. A :class:`~bot.loops.Loop` claims due rows through the database (two instances
never send one twice), holds them through the buyer's quiet hours, skips buyers who blocked the bot, sends,
logs the message (the CRM outbox makes it a note) and copies it to the lead's operator topic. «Тестовая партия
получена» also schedules the survey (:mod:`.survey`) ``FEEDBACK_SURVEY_DAYS`` later; «Основная партия отправлена» the
reorder offer (:mod:`.reorders`).
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import structlog
from aiogram.exceptions import TelegramAPIError, TelegramRetryAfter
from aiogram.types import InlineKeyboardMarkup
from aiogram.types import Message as TgMessage
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.db.base import utcnow
from bot.db.models import Lead, LeadEvent
from bot.followups import store
from bot.followups.config import StageMessages, load_stage_messages
from bot.followups.models import ASK, DONE, FAILED, NUDGE, REMINDER, REORDER, SKIPPED, STAGE, SURVEY, FollowUp
from bot.followups.reminders import Reminders
from bot.followups.reorders import Reorders
from bot.followups.required import RequiredData
from bot.followups.survey import Survey, survey_keyboard
from bot.funnel import depth
from bot.hours import QuietHours, zone_of
from bot.journal import CRM_TASK_CHANGED, FOLLOWUP_SENT, FOLLOWUP_SKIPPED, MAIN_BATCH_NUDGE, STAGE_EVENTS, Journal, Record
from bot.loops import Loop, Worker
from bot.messenger import BuyerUnreachable, Messenger
from bot.ports import Catalog, OperatorTopic
from bot.texts import Safe, t

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
POLL = 5.0  # seconds between rounds (a stage move wakes the loop at once)
LEASE = timedelta(minutes=2)  # a claimed row another instance may take over after this
BATCH = 20
MAX_ATTEMPTS = 5
RETRY = timedelta(minutes=1)  # after a transient Telegram error, doubling
SURVEY_AFTER = "test_batch_received"  # the stage the survey follows
MAIN_BATCH = "main_batch_agreed"  # a buyer who got this far needs no nudge


def deal_key(lead: Lead) -> str:
    """The buyer's deal in keys: its amoCRM id, else the lead's."""
    return f"D{lead.crm_lead_id}" if lead.crm_lead_id else f"L{lead.id}"


class FollowUps:
    """``on_record`` goes to ``Journal.subscribe``, ``workers`` to the app."""

    def __init__(self, settings: Settings, db: async_sessionmaker[AsyncSession], journal: Journal, messenger: Messenger, *,
                 catalog: Catalog, topic: OperatorTopic | None = None, clock: Clock = utcnow, messages: StageMessages | None = None) -> None:
        self.db = db
        self.journal = journal
        self.messenger = messenger
        self.topic = topic
        self.clock = clock
        self.messages = messages or load_stage_messages(settings.stage_messages)
        self.quiet = QuietHours.parse(settings.quiet_hours)
        self.timezone = settings.timezone
        self.lang = settings.default_language  # the managers'
        self.survey_after = timedelta(days=settings.feedback_survey_days)
        self.wake = asyncio.Event()
        self.reminders = Reminders(db, lambda: self.clock(), ZoneInfo(settings.timezone), self.lang, self.wake.set)
        self.required = RequiredData(db, journal, messenger, self._tell_managers, self.lang)
        self.survey = Survey(db, journal, messenger, self._tell_managers, clock=lambda: self.clock(),
                             nudge_after=timedelta(days=settings.main_batch_nudge_days), lang=self.lang)
        days = timedelta(days=1)
        self.reorders = Reorders(db, journal, messenger, catalog, self._tell_managers, clock=lambda: self.clock(), wake=self.wake.set,
                                 default=settings.reorder_default_days * days, notice=settings.reorder_notice_days * days,
                                 snooze=settings.reorder_snooze_days * days, tz=ZoneInfo(settings.timezone), lang=self.lang)
        self.loop = Loop("followups", self.tick, every=POLL, wake=self.wake)
        self.workers: list[Worker] = [self.loop.run]

    # ------------------------------------------------------------- scheduling
    async def on_record(self, session: AsyncSession, lead: Lead, record: Record) -> None:
        """Journal subscriber: a stage move schedules its message (once per deal and stage), an order the reorder offer, an
        amoCRM task of the reminder type its reminder."""
        if not isinstance(record, LeadEvent):
            return
        if record.kind == CRM_TASK_CHANGED:
            added = await self.reminders.from_task(session, lead, record.data)
        elif record.kind in STAGE_EVENTS:
            stage, deal = record.data.get("stage"), deal_key(lead)
            added = depth(stage) >= depth(lead.furthest_stage) and await self._schedule_stage(session, lead, record, deal)  # not a late webhook
            added |= await self.reorders.on_stage(session, lead, stage, deal)
        else:
            return
        if added:
            event.listen(session.sync_session, "after_commit", lambda _: self.wake.set(), once=True)

    async def _schedule_stage(self, session: AsyncSession, lead: Lead, record: LeadEvent, deal: str) -> bool:
        """The stage's message, its questions and (after «Тестовая партия получена») the survey; True if any was added."""
        stage, now = record.data.get("stage"), self.clock()
        added = False
        if self.messages.has(stage):
            added = await store.schedule(session, lead_id=lead.id, kind=STAGE, key=f"stage:{deal}:{stage}", due_at=now, now=now,
                                         stage=stage, data={"fields": record.data.get("fields") or {}})
        if (items := self.messages.requires.get(stage)) and (missing := await self.required.missing(session, lead, items)):
            added |= await store.schedule(session, lead_id=lead.id, kind=ASK, key=f"ask:{deal}:{stage}", due_at=now,
                                          now=now, stage=stage, data={"items": missing})
        if stage == SURVEY_AFTER:
            added |= await store.schedule(session, lead_id=lead.id, kind=SURVEY, key=f"survey:{deal}", due_at=now + self.survey_after,
                                          now=now, stage=stage)
        return added

    # ---------------------------------------------------------------- sending
    async def tick(self) -> bool:
        """One round: claim what is due and deliver it; True when more may be waiting."""
        now = self.clock()
        async with self.db() as session:  # read first: an idle round takes no write turn
            if not await store.any_due(session, now):
                return False
        async with self.db.begin() as session:
            rows = await store.claim_due(session, now, LEASE, BATCH)
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
        elif row.kind == NUDGE:
            await self._nudge(row, lead)
        elif row.kind == ASK and not self.quiet_until(lead, now):
            await self._ask(row, lead)
        elif depth(lead.furthest_stage) > depth(row.stage) and row.kind == STAGE:
            await self._skip(row, lead, "stale: the deal has moved on")
        elif until := self.quiet_until(lead, now):
            async with self.db.begin() as session:
                await store.postpone(session, row, until, reason="quiet hours")
        else:
            await self._send(row, lead)

    def quiet_until(self, lead: Lead, now: datetime) -> datetime | None:
        """When the buyer's quiet hours end, if it is night for them now."""
        return self.quiet.until(now, zone_of((lead.interests or {}).get("city"), self.timezone)) if self.quiet else None

    async def _ask(self, row: FollowUp, lead: Lead) -> None:
        """The first question of what a stage requires (the answers lead on to the next: :mod:`.required`)."""
        try:
            await self.required.ask(lead, row.id, row.data["items"][0])
        except BuyerUnreachable:
            await self._skip_blocked(row, lead)
            return
        except TelegramAPIError as exc:
            await self._retry(row, RETRY * 2 ** (row.attempts - 1), str(exc))
            return
        await self._finish(row, DONE, sent_at=self.clock())

    async def _send(self, row: FollowUp, lead: Lead) -> None:
        markup: InlineKeyboardMarkup | None = None
        if row.kind == SURVEY:
            text, markup = t(lead.language, "followups.survey.ask"), survey_keyboard(row.id)
        elif row.kind == REMINDER:
            text = t(lead.language, "followups.reminder.text", what=row.data.get("text"))
        elif row.kind == REORDER:
            text, markup = self.reorders.offer(row, lead)
        else:
            text = self.messages.render(row.stage or "", lead.language, lead_values(lead), row.data.get("fields") or {})
        try:
            sent = await self.deliver(lead, text, markup)
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
        await self._tell_managers(lead, t(self.lang, "followups.topic.sent", what=Safe(self._what(row)), text=Safe(text)))

    async def deliver(self, lead: Lead, text: str, markup: InlineKeyboardMarkup | None = None) -> TgMessage:
        """The one place a follow-up reaches Telegram (logged by the caller, with its key)."""
        return await self.messenger.send_text(lead, text, reply_markup=markup, log=False)

    async def _nudge(self, row: FollowUp, lead: Lead) -> None:
        """A happy buyer who has not ordered the main batch: a task for the manager (nothing to the buyer)."""
        if depth(lead.furthest_stage) >= depth(MAIN_BATCH):
            await self._skip(row, lead, "stale: the main batch is agreed")
            return
        rating = row.data.get("rating")
        async with self.db.begin() as session:
            fresh = await session.get(Lead, lead.id)
            await self.journal.event(session, fresh, MAIN_BATCH_NUDGE, rating=rating, days=self.survey.nudge_after.days)
            await store.finish(session, row, DONE, sent_at=self.clock())
        await self._tell_managers(lead, t(self.lang, "followups.topic.nudge", rating=rating))

    async def _retry(self, row: FollowUp, delay: timedelta, error: str) -> None:
        log.warning("followup.send_failed", followup_id=row.id, attempts=row.attempts, error=error)
        if row.attempts >= MAX_ATTEMPTS:
            await self._finish(row, FAILED, reason=error[:256])
            return
        async with self.db.begin() as session:
            await store.postpone(session, row, self.clock() + delay, reason=error[:256])

    async def _skip_blocked(self, row: FollowUp, lead: Lead) -> None:
        await self._skip(row, lead, "blocked")
        await self._tell_managers(lead, t(self.lang, "followups.topic.blocked", what=Safe(self._what(row))))

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

    def _what(self, row: FollowUp) -> str:
        """What a follow-up is, as the managers read it: «этап «…»», «опрос после тестовой партии»."""
        if row.kind in (SURVEY, REMINDER, ASK, REORDER):
            return t(self.lang, f"followups.topic.{row.kind}")
        return t(self.lang, "followups.topic.stage", stage=t(self.lang, f"followups.stages.{row.stage}"))


def lead_values(lead: Lead) -> dict[str, str]:
    """What a template knows of the buyer (escaped by the template)."""
    name = " ".join(p for p in (lead.first_name, lead.last_name) if p)
    return {"first_name": lead.first_name or "", "last_name": lead.last_name or "", "name": name,
            "company": lead.company or "", "city": str((lead.interests or {}).get("city") or "")}
