"""Buyer → managers: a free buyer message is queued for the lead's topic (the pacer posts it, an album
together), a buyer's edit goes onto its copy; in a plain supergroup (no topics) buyer messages are forwarded,
so the author shows."""
from __future__ import annotations

from aiogram.types import Message

from bot.db.models import Lead
from bot.inbound import Inbound
from bot.relay import store
from bot.relay.chat import OperatorChat
from bot.relay.copier import Copier, chunks
from bot.relay.models import RelayTopic
from bot.relay.pacer import Pacer, has_messages
from bot.relay.topics import Topics
from bot.texts import t


class BuyerMessages:
    def __init__(self, chat: OperatorChat, topics: Topics, copier: Copier, pacer: Pacer) -> None:
        self.chat = chat
        self.topics = topics
        self.copier = copier
        self.pacer = pacer

    async def forward(self, lead: Lead, message: Inbound) -> None:
        """The journey's hook: a free buyer message is queued for the lead's topic.

        It is urgent when it opens the conversation (a new lead) or the buyer's wait for an answer (a first
        question: nothing of this wait is queued or relayed yet); what follows while the buyer waits is routine.
        """
        if not self.chat.chat_ids or lead.is_banned:
            return
        async with self.chat.db() as session:
            topic = await store.topic(session, lead.id)
            first = not await has_messages(session, lead.id) and (
                lead.awaiting_reply_since is None or not await store.relayed_in_since(session, lead.id, lead.awaiting_reply_since))
        await self.pacer.message(lead, self.chat.group(lead, topic), message,
                                 urgent=topic is None or topic.card_message_id is None or first)

    async def on_edit(self, message: Message) -> None:
        """A buyer edited a relayed message: edit its copy (or post the new version under it)."""
        async with self.chat.db() as session:
            link = await store.operator_side(session, message.chat.id, message.message_id)
            lead = await session.get(Lead, link.lead_id) if link else None
        if link is None or lead is None or link.direction != "in" or link.operator_chat_id not in self.chat.chat_ids:
            return
        if await self.copier.edit(link.operator_chat_id, link.operator_message_id, message) is not None:
            text = t(self.chat.lang, "relay.edited") + "\n" + (message.text or message.caption or "")

            async def post(topic: RelayTopic) -> list[int]:
                async with self.chat.budgets.post(topic.chat_id, len(chunks(text))):
                    return await self.copier.send_parts(topic.chat_id, text, thread_id=topic.thread_id, reply_to=link.operator_message_id)

            await self.topics.send_in_topic(lead, post)
        async with self.chat.db.begin() as session:
            fresh = await session.get(Lead, lead.id)
            await self.chat.journal.message(session, fresh, direction="in", author="buyer", author_name=fresh.display_name,
                                            kind=message.content_type.value, text=message.text or message.caption,
                                            tg_chat_id=message.chat.id, tg_message_id=message.message_id,
                                            meta={"edit_of": message.message_id})
