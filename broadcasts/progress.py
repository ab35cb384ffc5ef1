"""The live progress message in the admin chat: one message per broadcast, edited every few seconds (by one instance:
its lease, renewed by each edit)."""
from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta

import structlog
from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramRetryAfter
from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.loops import Loop
from bot.texts import t
from broadcasts import stats, store
from broadcasts.models import DRAFT, PAUSED, RUNNING, SCHEDULED, Broadcast
from broadcasts.schedule import Clock
from broadcasts.stats import Stats

log = structlog.get_logger(__name__)

INTERVAL = 3.0
LEASE = timedelta(seconds=5 * INTERVAL)  # an instance edits a progress message until this long after its last edit
AFTERGLOW = timedelta(minutes=5)  # a finished broadcast's message gets its final figures within this time


class ControlCb(CallbackData, prefix="bcc"):
    """An admin control: ``pause``, ``resume``, ``cancel`` or ``stats`` of broadcast ``id``."""

    action: str
    id: int


def controls(lang: str, b: Broadcast) -> InlineKeyboardMarkup | None:
    """Pause or resume, and cancel, for a broadcast still under way."""
    actions = {RUNNING: ("pause", "cancel"), SCHEDULED: ("pause", "cancel"), PAUSED: ("resume", "cancel")}.get(b.state, ())
    buttons = [InlineKeyboardButton(text=t(lang, f"broadcasts.admin.{action}"), callback_data=ControlCb(action=action, id=b.id).pack()) for action in actions]
    return InlineKeyboardMarkup(inline_keyboard=[buttons]) if buttons else None


class Progress:
    def __init__(self, db: async_sessionmaker[AsyncSession], bot: Bot | None, rate: float, *, lang: str, zone: str, clock: Clock) -> None:
        self.db = db
        self.bot = bot
        self.rate = rate
        self.lang = lang
        self.zone = zone
        self.clock = clock
        self.owner = uuid.uuid4().hex
        self._shown: dict[int, str] = {}
        self._last: dict[int, tuple[float, int]] = {}  # broadcast → (monotonic time, deliveries done)

    def _rate(self, broadcast_id: int, done: int) -> float | None:
        """Deliveries per second since the previous update."""
        now = time.monotonic()
        previous = self._last.get(broadcast_id)
        self._last[broadcast_id] = (now, done)
        if previous is None or now <= previous[0]:
            return None
        return max(0.0, (done - previous[1]) / (now - previous[0]))

    def render(self, s: Stats, rate: float | None) -> tuple[str, InlineKeyboardMarkup | None]:
        return stats.progress(self.lang, s, rate, self.zone), controls(self.lang, s.broadcast)

    async def update(self) -> None:
        """Edit every progress message whose figures changed."""
        if self.bot is None:
            return
        since = self.clock() - AFTERGLOW
        async with self.db() as session:
            query = select(Broadcast).where(
                Broadcast.progress_message_id.is_not(None),
                or_(Broadcast.state.in_((SCHEDULED, RUNNING, PAUSED)), Broadcast.finished_at >= since,
                    and_(Broadcast.state == DRAFT, Broadcast.created_at >= since)),
            )
            found = [await stats.collect(session, b) for b in (await session.execute(query)).scalars()]
        for s in found:
            b = s.broadcast
            text, markup = self.render(s, self._rate(b.id, s.total.done))
            if self._shown.get(b.id) == text:
                continue
            async with self.db.begin() as session:
                if not await store.claim_progress(session, b.id, self.owner, self.clock(), LEASE):
                    continue  # another instance edits it
            try:
                await self.bot.edit_message_text(text=text, chat_id=b.progress_chat_id, message_id=b.progress_message_id, reply_markup=markup)
            except TelegramRetryAfter:
                return
            except TelegramAPIError as exc:  # "message is not modified", deleted message…
                log.info("broadcast.progress_not_edited", broadcast_id=b.id, error=exc.message)
            self._shown[b.id] = text

    async def serve(self, stop: asyncio.Event) -> None:
        """Refresh the progress messages every few seconds, until ``stop``."""
        await Loop("broadcasts.progress", self.update, every=INTERVAL).run(stop)
