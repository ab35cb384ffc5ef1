"""Sends to buyers through the send outbox (:mod:`bot.sender`) and logs every outgoing message; an unreachable
buyer is flagged, not retried."""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import structlog
from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError
from aiogram.methods import SendDocument, SendPhoto, SendVideo, SendVoice
from aiogram.types import InputFile, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import Lead
from bot.db.session import Database
from bot.inbound import attachment
from bot.journal import BLOCKED, Journal
from bot.sender import CATALOGUE, RELAY, SERVICE, Outgoing, Sender, Unknown

log = structlog.get_logger(__name__)
T = TypeVar("T")

MEDIA_METHODS: dict[str, type[SendPhoto | SendDocument | SendVideo | SendVoice]] = {
    "photo": SendPhoto, "document": SendDocument, "video": SendVideo, "voice": SendVoice}
"""A manager's attachment kind → its Bot API method, whose media field is named after the kind."""

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
    def __init__(self, bot: Bot, db: Database, journal: Journal, sender: Sender) -> None:
        self.bot = bot
        self.db = db
        self.journal = journal
        self.sender = sender
        sender.delivered = self._resumed
        sender.refused = self._refused

    async def _deliver(self, lead: Lead, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except (TelegramForbiddenError, TelegramBadRequest) as exc:
            reason = unreachable_reason(exc)
            if reason is None:
                raise
            await self.mark_unreachable(lead.id, reason)
            raise BuyerUnreachable(lead.id, reason) from exc

    async def _resumed(self, out: Outgoing, sent: Message) -> None:
        """A message the sender delivered after a restart or for a stopped instance: logged like any other, but a
        relayed one, which its relay logs as the manager's once it sees it sent (:mod:`bot.crm.replies`)."""
        if out.lead_id is not None and out.kind != RELAY:
            await self.log_out(out.lead_id, kind="text", text=sent.text or out.text, tg_message_id=sent.message_id)

    async def _refused(self, out: Outgoing, exc: Exception) -> None:
        reason = unreachable_reason(exc)
        if reason is not None and out.lead_id is not None:
            await self.mark_unreachable(out.lead_id, reason)

    async def stage(self, session: AsyncSession, lead: Lead, items: Sequence[tuple[str, Any]], *, kind: str = SERVICE) -> list[Outgoing]:
        """Record messages for ``lead`` in ``session``'s transaction; :meth:`deliver` sends them after it commits."""
        return await self.sender.stage(session, lead.id, lead.tg_user_id, items, kind)

    async def deliver(self, lead: Lead, staged: Sequence[Outgoing], *, log: bool = True, author: str = "bot",
                      author_name: str | None = None) -> list[Message]:
        """Send recorded messages in order (through outages, by the sender's rules); the ones delivered, logged
        unless ``log=False`` (the caller logs them in its own transaction). A final refusal stops the rest."""
        sent = []
        for out in staged:
            try:
                sent.append(await self._deliver(lead, lambda out=out: self.sender.send(out)))
            except Unknown:  # the buyer may have it; not sent again (a greeting, a relayed message)
                continue
        if log and sent:
            async def record(session: AsyncSession) -> None:
                for message in sent:
                    await self.log_out(lead.id, kind="text", text=message.text, tg_message_id=message.message_id,
                                       author=author, author_name=author_name, session=session)

            await self.db.together(record)
        return sent

    async def say(self, lead: Lead, items: Sequence[tuple[str, Any]], *, kind: str = SERVICE, log: bool = True,
                  author: str = "bot", author_name: str | None = None) -> list[Message]:
        """Record ``items`` (text, reply markup) in one transaction, then :meth:`deliver` them."""
        async with self.db.begin() as session:
            staged = await self.stage(session, lead, items, kind=kind)
        return await self.deliver(lead, staged, log=log, author=author, author_name=author_name)

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
        self, lead: Lead, text: str, *, reply_markup: Any = None, author: str = "bot", author_name: str | None = None,
        log: bool = True, kind: str = SERVICE,
    ) -> Message | None:
        """Send ``text`` through the outbox (None when its outcome is unknown); ``log=False`` when the caller logs it."""
        sent = await self.say(lead, [(text, reply_markup)], kind=kind, log=log, author=author, author_name=author_name)
        return sent[0] if sent else None

    async def send_media(self, lead: Lead, kind: str, media: str | InputFile, *, caption: str | None = None) -> Message:
        """Send a manager's ``photo``, ``document``, ``video`` or ``voice`` through outages by the relay's rule (not
        logged: the caller logs it)."""
        method = MEDIA_METHODS[kind](chat_id=lead.tg_user_id, caption=caption, **{kind: media})
        return await self._deliver(lead, lambda: self.sender.call(method, RELAY))

    async def send_document(self, lead: Lead, document: str | InputFile, *, caption: str | None = None, reply_markup: Any = None) -> Message:
        """Send a file of the catalogue (the PDF, the price list) through outages, logged."""
        method = SendDocument(chat_id=lead.tg_user_id, document=document, caption=caption, reply_markup=reply_markup)
        sent = await self._deliver(lead, lambda: self.sender.call(method, CATALOGUE))
        name = sent.document.file_name if sent.document else None
        await self.log_out(lead.id, kind="document", text=sent.caption or caption, tg_message_id=sent.message_id,
                           meta={"file_name": name, **attachment(sent)})
        return sent
