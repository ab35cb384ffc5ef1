"""Managers → buyer: a message in a lead's conversation is copied to the buyer from the bot (an album once
complete, replies kept as replies, edits mirrored), except internal notes (``//`` or ``#note``), which
stay in the team; every pair of messages is kept, so replies and edits find their counterpart later."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from aiogram.enums import ContentType
from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError
from aiogram.types import Message, User

from bot.db.models import Lead
from bot.inbound import Inbound, attachment
from bot.messenger import BuyerUnreachable, unreachable_reason
from bot.sender import GaveUp, Unknown
from bot.relay import store
from bot.relay.albums import Albums
from bot.relay.chat import OperatorChat
from bot.relay.copier import Copier
from bot.relay.topics import Topics
from bot.texts import Safe, t

log = structlog.get_logger(__name__)
T = TypeVar("T")

#: What is relayed (service messages — topic created, member joined… — are not).
RELAYED = frozenset({
    ContentType.TEXT, ContentType.PHOTO, ContentType.DOCUMENT, ContentType.VOICE, ContentType.VIDEO, ContentType.VIDEO_NOTE,
    ContentType.STICKER, ContentType.LOCATION, ContentType.CONTACT, ContentType.AUDIO, ContentType.ANIMATION, ContentType.VENUE,
})
NO_TELEGRAM = "no Telegram account"


def internal_note(message: Message) -> str | None:
    """The note of a message that starts with ``//`` or ``#note`` (it stays in the team), else None."""
    text = (message.text or message.caption or "").lstrip()
    for marker in ("//", "#note"):
        if text[: len(marker)].lower() == marker:
            return text[len(marker):].strip()
    return None


class ManagerMessages:
    def __init__(self, chat: OperatorChat, topics: Topics, copier: Copier, albums: Albums) -> None:
        self.chat = chat
        self.topics = topics
        self.copier = copier
        self.albums = albums

    async def on_message(self, message: Message) -> None:
        """A manager's message in a lead's conversation: an internal note, or an answer to relay to the buyer."""
        user = message.from_user
        if user is None or user.is_bot or message.content_type not in RELAYED:
            return
        note = internal_note(message)
        resolved = await self.topics.lead_of(message)
        if resolved is None:
            return
        _, lead = resolved
        name = self.chat.manager_name(user)
        if note is not None:
            async with self.chat.db.begin() as session:
                fresh = await session.get(Lead, lead.id)
                await self.chat.journal.message(session, fresh, direction="out", author="manager", author_name=name,
                                                kind=message.content_type.value, text=note, tg_chat_id=message.chat.id,
                                                tg_message_id=message.message_id, is_internal=True, meta={"manager_tg_id": user.id})
            return
        scope = (message.chat.id, message.message_thread_id)
        if message.media_group_id:
            self.albums.add(scope, message.media_group_id, message, lambda items: self._relay_out(lead, items, user, name))
            return
        await self.albums.flush(scope)
        await self._relay_out(lead, [message], user, name)

    async def to_buyer(self, lead: Lead, origin: Message, send: Callable[[], Awaitable[T]]) -> T | None:
        """Run a send to the buyer; a refusal is reported under ``origin`` and an unreachable buyer flagged."""
        try:
            if lead.tg_user_id is None:
                raise BuyerUnreachable(lead.id, NO_TELEGRAM)
            return await send()
        except BuyerUnreachable as exc:  # already flagged by the messenger
            reason = exc.reason
        except GaveUp as exc:  # Telegram did not take it for SEND_RETRY_FOR: the manager decides what next
            await self.chat.reply(origin, self.chat.failed(str(exc)))
            return None
        except Unknown:  # the connection broke after the request left: maybe delivered, not sent twice
            await self.chat.reply(origin, t(self.chat.lang, "relay.unknown", time=self.chat.time()))
            return None
        except (TelegramForbiddenError, TelegramBadRequest) as exc:
            reason = unreachable_reason(exc)
            if reason is None:
                await self.chat.reply(origin, self.chat.failed(exc.message))
                return None
            await self.chat.messenger.mark_unreachable(lead.id, reason)
        log.info("relay.undelivered", lead_id=lead.id, reason=reason)
        await self.chat.reply(origin, t(self.chat.lang, "relay.undelivered", reason=self._reason(reason), time=self.chat.time()))
        await self.topics.refresh_card(lead.id)
        return None

    def _reason(self, reason: str) -> str:
        low = reason.lower()
        key = ("blocked" if "blocked" in low else "deactivated" if "deactivated" in low
               else "not_started" if "initiate" in low or "chat not found" in low
               else "no_telegram" if reason == NO_TELEGRAM else None)
        return Safe(t(self.chat.lang, f"relay.reasons.{key}")) if key else reason

    async def _relay_out(self, lead: Lead, messages: list[Message], user: User, name: str) -> None:
        first = messages[0]
        reply_to = None
        if first.reply_to_message is not None:
            async with self.chat.db() as session:
                link = await store.buyer_side(session, first.chat.id, first.reply_to_message.message_id)
            reply_to = link.buyer_message_id if link and link.lead_id == lead.id else None
        pairs = await self.to_buyer(lead, first, lambda: self.copier.copy([Inbound.of(m) for m in messages], lead.tg_user_id, reply_to=reply_to))
        if pairs is None:
            return
        delivered: dict[int, int] = {}
        for source, buyer in pairs:
            delivered.setdefault(source, buyer)
        await self.remember(lead, first.chat.id, [(buyer, source) for source, buyer in pairs],
                            [(message, delivered.get(message.message_id)) for message in messages], user, name)

    async def remember(self, lead: Lead, chat_id: int, pairs: list[tuple[int, int]], logged: list[tuple[Message, int | None]],
                       user: User, name: str, **meta: Any) -> None:
        """Map ``(buyer message, message in operator group chat_id)`` pairs; log each message with its id in the buyer's
        chat, as the manager's."""
        async with self.chat.db.begin() as session:
            await store.add_links(session, lead.id, "out", lead.tg_user_id, pairs, chat_id)
            for message, buyer_message_id in logged:
                await self.chat.messenger.log_out(lead.id, kind=message.content_type.value, text=message.text or message.caption,
                                                  tg_message_id=buyer_message_id, author="manager", author_name=name,
                                                  meta={"manager_tg_id": user.id, **attachment(message), **meta}, session=session)

    async def on_edit(self, message: Message) -> None:
        """A manager edited a relayed message: edit the buyer's copy; a failure is reported."""
        if message.from_user is None or internal_note(message) is not None:
            return
        async with self.chat.db() as session:
            link = await store.buyer_side(session, message.chat.id, message.message_id)
            lead = await session.get(Lead, link.lead_id) if link else None
        if link is None or lead is None or link.direction != "out":
            return
        error = await self.copier.edit(lead.tg_user_id, link.buyer_message_id, message)
        if error is not None:
            await self.chat.reply(message, self.chat.failed(error))
            return
        async with self.chat.db.begin() as session:
            await self.chat.messenger.log_out(lead.id, kind=message.content_type.value, text=message.text or message.caption,
                                              tg_message_id=link.buyer_message_id, author="manager",
                                              author_name=self.chat.manager_name(message.from_user),
                                              meta={"manager_tg_id": message.from_user.id, "edit_of": link.buyer_message_id},
                                              session=session)
