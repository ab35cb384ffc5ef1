"""Sends to buyers and logs every outgoing message; an unreachable buyer is flagged, not retried."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError
from aiogram.types import InputFile, Message
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import Lead
from bot.inbound import attachment
from bot.journal import BLOCKED, Journal

log = structlog.get_logger(__name__)
T = TypeVar("T")

UNREACHABLE_MARKERS = ("bot was blocked by the user", "user is deactivated", "chat not found", "bot can't initiate conversation")


class BuyerUnreachable(Exception):
    """Telegram refused delivery to the buyer for good (blocked the bot, deleted account…)."""

    def __init__(self, lead_id: int, reason: str) -> None:
        super().__init__(f"lead {lead_id}: {reason}")
        self.lead_id = lead_id
        self.reason = reason


def unreachable_reason(exc: Exception) -> str | None:
    """The Telegram description if ``exc`` means the chat is gone for good, else None."""
    if isinstance(exc, (TelegramForbiddenError, TelegramBadRequest)):
        text = exc.message.lower()
        if any(marker in text for marker in UNREACHABLE_MARKERS):
            return exc.message
    return None


class Messenger:
    def __init__(self, bot: Bot, db: async_sessionmaker[AsyncSession], journal: Journal) -> None:
        self.bot = bot
        self.db = db
        self.journal = journal

    async def _deliver(self, lead: Lead, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except (TelegramForbiddenError, TelegramBadRequest) as exc:
            reason = unreachable_reason(exc)
            if reason is None:
                raise
            await self.mark_unreachable(lead.id, reason)
            raise BuyerUnreachable(lead.id, reason) from exc

    async def mark_unreachable(self, lead_id: int, reason: str) -> None:
        async with self.db.begin() as session:
            lead = await session.get(Lead, lead_id)
            if lead is not None and not lead.is_blocked:
                lead.is_blocked = True
                await self.journal.event(session, lead, BLOCKED, reason=reason)
        log.info("buyer.unreachable", lead_id=lead_id, reason=reason)

    async def log_out(
        self, lead_id: int, *, kind: str, text: str | None, tg_message_id: int | None, author: str = "bot",
        author_name: str | None = None, meta: dict[str, Any] | None = None, session: AsyncSession | None = None,
    ) -> None:
        """Record an outgoing message in the conversation log (its own transaction unless one is given)."""
        async def write(s: AsyncSession) -> None:
            lead = await s.get(Lead, lead_id)
            if lead is not None:
                await self.journal.message(
                    s, lead, direction="out", author=author, author_name=author_name, kind=kind, text=text,
                    tg_chat_id=lead.tg_user_id, tg_message_id=tg_message_id, meta=meta,
                )

        if session is not None:
            await write(session)
        else:
            async with self.db.begin() as own:
                await write(own)

    async def send_text(
        self, lead: Lead, text: str, *, reply_markup: Any = None, author: str = "bot", author_name: str | None = None, log: bool = True
    ) -> Message:
        """Send ``text``; ``log=False`` when the caller logs it in its own transaction."""
        sent = await self._deliver(lead, lambda: self.bot.send_message(lead.tg_user_id, text, reply_markup=reply_markup))
        if log:
            await self.log_out(lead.id, kind="text", text=sent.text or text, tg_message_id=sent.message_id, author=author, author_name=author_name)
        return sent

    async def send_media(self, lead: Lead, kind: str, media: str | InputFile, *, caption: str | None = None) -> Message:
        """Send a ``photo``, ``document``, ``video`` or ``voice`` (not logged: the caller logs it)."""
        send = {"photo": self.bot.send_photo, "document": self.bot.send_document, "video": self.bot.send_video,
                "voice": self.bot.send_voice}[kind]
        return await self._deliver(lead, lambda: send(lead.tg_user_id, media, caption=caption))

    async def send_document(self, lead: Lead, document: str | InputFile, *, caption: str | None = None, reply_markup: Any = None) -> Message:
        sent = await self._deliver(
            lead, lambda: self.bot.send_document(lead.tg_user_id, document, caption=caption, reply_markup=reply_markup)
        )
        name = sent.document.file_name if sent.document else None
        await self.log_out(lead.id, kind="document", text=sent.caption or caption, tg_message_id=sent.message_id,
                           meta={"file_name": name, **attachment(sent)})
        return sent
