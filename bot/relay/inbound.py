"""Buyer → managers: a free buyer message (an album once complete) is copied into the lead's topic, a buyer's
edit onto its copy; in a plain supergroup (no topics) buyer messages are forwarded, so the author shows."""
from __future__ import annotations

import time

import structlog
from aiogram.exceptions import TelegramAPIError
from aiogram.types import Message

from bot import metrics
from bot.db.models import Lead
from bot.inbound import Inbound
from bot.relay import store
from bot.relay.albums import Albums
from bot.relay.chat import OperatorChat
from bot.relay.copier import Copier
from bot.relay.models import RelayTopic
from bot.relay.topics import Topics
from bot.texts import t

log = structlog.get_logger(__name__)


class BuyerMessages:
    def __init__(self, chat: OperatorChat, topics: Topics, copier: Copier, albums: Albums) -> None:
        self.chat = chat
        self.topics = topics
        self.copier = copier
        self.albums = albums

    async def forward(self, lead: Lead, message: Inbound) -> None:
        """The journey's hook: a free buyer message goes to the lead's topic (an album once complete)."""
        if self.chat.chat_id is None or lead.is_banned:
            return
        if message.media_group_id:
            self.albums.add(message.chat_id, message.media_group_id, message, lambda items: self._relay_in(lead, items))
            return
        await self.albums.flush(message.chat_id)
        await self._relay_in(lead, [message])

    async def _relay_in(self, lead: Lead, messages: list[Inbound]) -> None:
        first = messages[0]
        reply_to = None
        if first.reply_to_message_id is not None:
            async with self.chat.db() as session:
                link = await store.operator_side(session, first.chat_id, first.reply_to_message_id)
            reply_to = link.operator_message_id if link and link.operator_chat_id == self.chat.chat_id else None
        forward = not await self.topics.is_forum()

        async def send(topic: RelayTopic) -> list[tuple[int, int]]:
            if topic.is_closed:  # the buyer wrote again: the conversation is open
                await self.topics.set_closed(lead, topic, False, manager=None)
                await self.topics.refresh(lead, topic)
            return await self.copier.copy(messages, self.chat.chat_id, thread_id=topic.thread_id, reply_to=reply_to, forward=forward)

        try:
            pairs = await self.topics.send_in_topic(lead, send)
        except TelegramAPIError as exc:  # the message stays in the conversation log (and amoCRM)
            log.error("relay.in_failed", lead_id=lead.id, message_id=first.message_id, error=str(exc))
            return
        if first.sent_at is not None:
            metrics.RELAY.observe(max(0.0, time.time() - first.sent_at))
        async with self.chat.db.begin() as session:
            await store.add_links(session, lead.id, "in", first.chat_id, pairs, self.chat.chat_id)

    async def on_edit(self, message: Message) -> None:
        """A buyer edited a relayed message: edit its copy (or post the new version under it)."""
        async with self.chat.db() as session:
            link = await store.operator_side(session, message.chat.id, message.message_id)
            lead = await session.get(Lead, link.lead_id) if link else None
        if link is None or lead is None or link.direction != "in" or link.operator_chat_id != self.chat.chat_id:
            return
        if await self.copier.edit(self.chat.chat_id, link.operator_message_id, message) is not None:
            text = t(self.chat.lang, "relay.edited") + "\n" + (message.text or message.caption or "")
            await self.topics.send_in_topic(lead, lambda topic: self.copier.send_parts(
                self.chat.chat_id, text, thread_id=topic.thread_id, reply_to=link.operator_message_id))
        async with self.chat.db.begin() as session:
            fresh = await session.get(Lead, lead.id)
            await self.chat.journal.message(session, fresh, direction="in", author="buyer", author_name=fresh.display_name,
                                            kind=message.content_type.value, text=message.text or message.caption,
                                            tg_chat_id=message.chat.id, tg_message_id=message.message_id,
                                            meta={"edit_of": message.message_id})
