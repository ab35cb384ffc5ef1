"""``Broadcasts``: the engine, sequences, campaigns and progress reports, built once from the settings."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import structlog
from aiogram import Bot
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.db import leads
from bot.db.base import utcnow
from bot.db.models import Lead, Message
from bot.hours import QuietHours
from bot.journal import STAGE_EVENTS, UNSUBSCRIBED, Journal, Record
from bot.loops import Loop
from bot.messenger import Messenger
from bot.ports import Catalog
from bot.quiz import Quiz
from bot.ratelimit import RateLimit, chat_spacing, paced, rate_limit
from bot.telegram import create_bot
from bot.texts import t
from broadcasts import store
from broadcasts.campaigns import Campaigns
from broadcasts.content import Renderer
from broadcasts.engine import Engine
from broadcasts.progress import Progress
from broadcasts.schedule import Clock
from broadcasts.sequences import Sequences, load_sequences, reached

log = structlog.get_logger(__name__)

POLL_SECONDS = 1.0
HOLD = 10.0  # seconds a dead instance's held grants of the shared broadcast rate stay taken (text leaves in ms)
REPLY_WINDOW = timedelta(hours=48)
UNSUBSCRIBE_WINDOW = timedelta(hours=48)
CONVERSION_WINDOW = timedelta(days=7)
CONVERSION_STAGE = "test_batch_sent"  # «Тестовая партия отправлена»


class Broadcasts:
    """What the app wires in: a journal subscriber, background workers, and the admin/buyer actions."""

    def __init__(
        self,
        settings: Settings,
        db: async_sessionmaker[AsyncSession],
        journal: Journal,
        quiz: Quiz,
        *,
        messenger: Messenger | None = None,
        catalog: Catalog | None = None,
        clock: Clock = utcnow,
        bot: Bot | None = None,
        limiter: RateLimit | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.journal = journal
        self.messenger = messenger
        self.clock = clock  # replaceable at any time (tests drive scheduling with their own clock)
        token = settings.bot_token.get_secret_value() if settings.bot_token else ""
        self._owns_bot = bot is None
        # Its own Bot without the flood-wait retries: the engine handles 429 itself. None without a token (CLI reports).
        self.bot = bot or (create_bot(token, settings.telegram_api_url, retry_flood=False) if token else None)
        self.paid = settings.broadcast_paid > 0
        self.rate = settings.broadcast_paid if self.paid else settings.broadcast_rate
        self.limiter = limiter or rate_limit(*paced(self.rate), redis_url=settings.redis_url, key="optobot:broadcast:rate",
                                             hold=HOLD)
        self.renderer = Renderer(quiz, settings.default_language)
        self.engine = Engine(
            db, self.bot, journal, self.renderer, self.limiter, paid=self.paid, quiet_hours=QuietHours.parse(settings.quiet_hours),
            timezone=settings.timezone, max_errors=settings.broadcast_max_errors, max_attempts=settings.broadcast_max_attempts,
            clock=self.now, catalog=catalog, log_sent=settings.channel,
            spacing=chat_spacing(redis_url=settings.redis_url, prefix="optobot:tg:chat"),
        )
        self.sequences = Sequences(load_sequences(settings.broadcast_sequences, self.renderer), db, journal, self.now)
        self.campaigns = Campaigns(db, self.renderer, quiz, rate=self.rate, timezone=settings.timezone, clock=self.now)
        self.progress = Progress(db, self.bot, self.rate, lang=settings.default_language, zone=settings.timezone, clock=self.now)
        self.workers = [self.serve, self.progress.serve]

    def now(self) -> datetime:
        return self.clock()

    # ---------------------------------------------------------- journal
    async def on_record(self, session: AsyncSession, lead: Lead, record: Record) -> None:
        """Journal subscriber: sequences, and crediting replies, opt-outs and conversions to broadcasts."""
        await self.sequences.on_record(session, lead, record)
        now = record.created_at

        def broadcast_within(window: timedelta) -> bool:  # no query for leads no broadcast reached lately
            return lead.last_broadcast_at is not None and now - lead.last_broadcast_at <= window

        if isinstance(record, Message):
            if record.direction == "in" and broadcast_within(REPLY_WINDOW):
                await store.attribute(session, lead.id, "replied_at", now, REPLY_WINDOW)
        elif record.kind == UNSUBSCRIBED and broadcast_within(UNSUBSCRIBE_WINDOW):
            await store.attribute(session, lead.id, "unsubscribed_at", now, UNSUBSCRIBE_WINDOW)
        elif record.kind in STAGE_EVENTS and broadcast_within(CONVERSION_WINDOW):
            stage, previous = record.data.get("stage") or "", record.data.get("previous") or "new"
            if reached(stage, CONVERSION_STAGE) and not reached(previous, CONVERSION_STAGE):
                await store.attribute(session, lead.id, "converted_at", now, CONVERSION_WINDOW)

    # ---------------------------------------------------------- running
    async def tick(self) -> dict[int, str]:
        """One deterministic round (tests, ``broadcast send``): due sequence steps, then every due delivery."""
        await self.sequences.enqueue_due()
        return await self.engine.tick()

    async def serve(self, stop: asyncio.Event) -> None:
        """The background worker: every second, enqueue due steps and run the broadcasts with work; until ``stop``."""
        runs: dict[int, asyncio.Task[str]] = {}

        async def poll() -> None:
            for broadcast_id, task in list(runs.items()):
                if task.done():
                    del runs[broadcast_id]
                    if not task.cancelled() and task.exception() is not None:
                        log.error("broadcasts.run_failed", broadcast_id=broadcast_id, error=repr(task.exception()))
            await self.sequences.enqueue_due()
            for broadcast_id in await self.engine.due():
                if broadcast_id not in runs:
                    runs[broadcast_id] = asyncio.create_task(self.engine.run(broadcast_id))

        try:
            await Loop("broadcasts", poll, every=POLL_SECONDS).run(stop)
        finally:
            self.engine.stopping = True  # runs finish the calls under way and record them
            if runs:
                await asyncio.wait(runs.values(), timeout=10)
            self.engine.stopping = False

    # ------------------------------------------------------- buyer actions
    async def unsubscribe(self, tg_user_id: int, *, via: str, broadcast_id: int | None = None) -> None:
        """Opt the buyer out of all marketing (``/start`` opts back in) and confirm it."""
        async with self.db.begin() as session:
            lead = await leads.by_tg_user(session, tg_user_id, for_update=True)
            if lead is None:
                return
            if lead.unsubscribed_at is None:
                lead.unsubscribed_at = self.now()
                await self.journal.event(session, lead, UNSUBSCRIBED, via=via, broadcast_id=broadcast_id)
        if self.messenger is not None:
            await self.messenger.send_text(lead, t(lead.language, "broadcasts.unsubscribed"))

    async def click(self, tg_user_id: int, broadcast_id: int, button: str) -> bool:
        """Count a tracked button press (once per buyer and button); False if the broadcast never went to them."""
        async with self.db.begin() as session:
            delivery = await store.delivery_of(session, broadcast_id, tg_user_id)
            if delivery is None:
                return False
            await store.add_click(session, delivery.id, button, self.now())
        return True

    async def close(self) -> None:
        await self.limiter.close()
        await self.engine.spacing.close()
        if self._owns_bot and self.bot is not None:
            await self.bot.session.close()
