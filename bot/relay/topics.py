"""The lead's conversation in the operator chat: its forum topic (created on first need, recreated when
deleted, renamed as the lead changes), the lead card on top, closing and reopening."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar
from weakref import WeakValueDictionary

import structlog
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest
from aiogram.types import Message

from bot.db.models import Lead
from bot.relay import store
from bot.relay.card import TOPIC_COLOR, card_keyboard, card_text, fingerprint, topic_name
from bot.relay.chat import OperatorChat, thread_gone, unmodified
from bot.relay.models import RelayTopic

log = structlog.get_logger(__name__)
T = TypeVar("T")


class Topics:
    def __init__(self, chat: OperatorChat) -> None:
        self.chat = chat
        self._locks: WeakValueDictionary[int, asyncio.Lock] = WeakValueDictionary()
        self._forum: dict[int, bool] = {}

    def lock(self, lead_id: int) -> asyncio.Lock:
        lock = self._locks.get(lead_id)
        if lock is None:
            lock = self._locks[lead_id] = asyncio.Lock()
        return lock

    async def is_forum(self, chat_id: int) -> bool:
        if chat_id not in self._forum:
            self._forum[chat_id] = bool((await self.chat.bot.get_chat(chat_id)).is_forum)
        return self._forum[chat_id]

    def _card(self, lead: Lead, closed: bool) -> tuple[str, str]:
        chat = self.chat
        name = topic_name(lead, chat.quiz, chat.lang)
        return name, card_text(lead, quiz=chat.quiz, roster=chat.roster, lang=chat.lang, crm_url=chat.settings.amocrm_base_url, closed=closed)

    async def conversation(self, lead: Lead, *, gone: RelayTopic | None = None) -> RelayTopic:
        """The lead's topic with an up-to-date card; created, or recreated when ``gone``. Call under the lead's lock."""
        async with self.chat.db() as session:
            topic = await store.topic(session, lead.id)
        if gone is not None and topic is not None and topic.card_message_id != gone.card_message_id:
            return topic  # another instance recreated it already
        chat_id = self.chat.group(lead, topic)
        if (gone is not None or topic is None or topic.card_message_id is None or topic.chat_id != chat_id
                or (topic.thread_id is not None) != await self.is_forum(chat_id)):  # topics were switched on or off since
            return await self._create(lead, topic, chat_id)
        try:
            await self.refresh(lead, topic)
        except TelegramBadRequest as exc:
            if not thread_gone(exc):
                raise
            return await self._create(lead, topic, chat_id)
        return topic

    async def _create(self, lead: Lead, previous: RelayTopic | None, chat_id: int) -> RelayTopic:
        """Create the topic (in a forum) and post the card, within the group's budgets; one instance wins if several try."""
        chat, bot = self.chat, self.chat.bot
        name, text = self._card(lead, closed=False)
        thread_id = None
        if await self.is_forum(chat_id):
            async with chat.budgets.new_topic(chat_id):
                thread_id = (await bot.create_forum_topic(chat_id, name, icon_color=TOPIC_COLOR)).message_thread_id
        async with chat.budgets.post(chat_id):
            card = await bot.send_message(chat_id, text, message_thread_id=thread_id, reply_markup=card_keyboard(lead, chat.lang, closed=False))
        async with chat.db.begin() as session:
            placed = await store.place_topic(session, lead.id, chat_id, thread_id, card.message_id, name=name,
                                             card_hash=fingerprint(name, text),
                                             replaces=previous.card_message_id if previous else None)
            topic = await store.topic(session, lead.id)
        if not placed:  # another instance was faster: ours goes
            with contextlib.suppress(TelegramAPIError):
                if thread_id is not None:
                    await bot.delete_forum_topic(chat_id, thread_id)
                else:
                    await bot.delete_message(chat_id, card.message_id)
        else:
            log.info("relay.topic_created", lead_id=lead.id, chat_id=chat_id, thread_id=thread_id, recreated=previous is not None)
        return topic

    async def refresh(self, lead: Lead, topic: RelayTopic) -> None:
        """Edit the topic name and card if the lead changed."""
        name, text = self._card(lead, topic.is_closed)
        digest = fingerprint(name, text)
        if digest == topic.card_hash:
            return
        chat = self.chat
        try:
            if topic.thread_id is not None and name != topic.name:
                await chat.bot.edit_forum_topic(topic.chat_id, topic.thread_id, name=name)
            await chat.bot.edit_message_text(text, chat_id=topic.chat_id, message_id=topic.card_message_id,
                                             reply_markup=card_keyboard(lead, chat.lang, closed=topic.is_closed))
        except TelegramBadRequest as exc:
            if not unmodified(exc):
                raise
        async with chat.db.begin() as session:
            row = await store.topic(session, lead.id)
            if row is not None and row.card_message_id == topic.card_message_id:
                row.name, row.card_hash = name, digest
        topic.name, topic.card_hash = name, digest

    async def send_in_topic(self, lead: Lead, send: Callable[[RelayTopic], Awaitable[T]]) -> T:
        """Run ``send`` in the lead's topic; if the topic is gone, recreate it and run it again."""
        async with self.lock(lead.id):
            topic = await self.conversation(lead)
            try:
                return await send(topic)
            except TelegramBadRequest as exc:
                if not thread_gone(exc):
                    raise
                log.warning("relay.topic_gone", lead_id=lead.id, thread_id=topic.thread_id, error=exc.message)
                return await send(await self.conversation(lead, gone=topic))

    async def refresh_card(self, lead_id: int) -> None:
        async with self.chat.db() as session:
            lead = await session.get(Lead, lead_id)
        if lead is not None:
            async with self.lock(lead_id):
                await self.conversation(lead)

    async def lead_of(self, message: Message) -> tuple[RelayTopic, Lead] | None:
        """The lead a message in the operator chat is about: by its topic, or by the message it replies to."""
        chat_id = message.chat.id
        async with self.chat.db() as session:
            if message.is_topic_message and message.message_thread_id:
                return await store.conversation(session, chat_id, thread_id=message.message_thread_id)
            if message.reply_to_message is None:
                return None
            replied = message.reply_to_message.message_id
            link = await store.buyer_side(session, chat_id, replied)
            card = None if link else await store.topic_by_card(session, chat_id, replied)
            lead_id = link.lead_id if link else card.lead_id if card else None
            return await store.conversation(session, chat_id, lead_id=lead_id) if lead_id else None

    async def set_closed(self, lead: Lead, topic: RelayTopic, closed: bool, *, manager: str | None) -> None:
        """Close or reopen the conversation (and its forum topic); closing dismisses the open wait."""
        bot = self.chat.bot
        if topic.thread_id is not None:
            try:
                await (bot.close_forum_topic if closed else bot.reopen_forum_topic)(topic.chat_id, topic.thread_id)
            except TelegramBadRequest as exc:
                if not unmodified(exc):
                    raise
        async with self.chat.db.begin() as session:
            row = await store.topic(session, lead.id)
            row.is_closed = closed
            if closed:
                await self.chat.sla.dismiss(session, await session.get(Lead, lead.id))
        topic.is_closed = closed
        log.info("relay.topic_closed" if closed else "relay.topic_reopened", lead_id=lead.id, manager=manager)
