"""The operator chat: one forum topic per lead, the two-way relay, commands, quick replies, card buttons, SLA pings.

Buyer → managers (:mod:`.inbound`): every free buyer message (the journey's :class:`bot.ports.BuyerRelay`
hook) is queued for the lead's topic (:mod:`.topics`), created with a lead card on first need and
recreated if it was deleted; :mod:`.pacer` posts what is queued within each group's budget (about 20
posts a minute), the most urgent first. With several groups (``OPERATOR_CHAT_IDS``) a lead's
conversation is in its manager's group, or one of them evenly, and stays there. Managers → buyer (:mod:`.outbound`): any message in a lead's topic is
copied to the buyer from the bot, except internal notes (``//`` or ``#note``) and commands
(:mod:`.commands`, acting through :mod:`.actions` and :mod:`.quick`). Every pair of messages is kept in
``relay_links``, so replies and edits find their counterpart after a restart. :mod:`.worker` refreshes
cards and queues the SLA pings in the background.

Without topics (a plain supergroup, the lesser mode) buyer messages are forwarded, so the
author shows, and managers answer by replying to them or to the lead card.
"""
from __future__ import annotations

import asyncio
from functools import partial

from aiogram.types import Message

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.db.models import Lead
from bot.hours import WorkingHours
from bot.inbound import Inbound
from bot.journal import Journal
from bot.messenger import Messenger
from bot.ports import Catalog, Journey
from bot.quiz import Quiz
from bot.relay.actions import Actions
from bot.relay.albums import Albums
from bot.relay.chat import OperatorChat
from bot.relay.config import load_roster
from bot.relay.copier import Copier
from bot.relay.inbound import BuyerMessages
from bot.relay.outbound import ManagerMessages
from bot.relay.pacer import Pacer
from bot.relay.quick import QuickReplies
from bot.relay.sla import Sla
from bot.relay.topics import Topics
from bot.relay.worker import RelayWorker
from bot.sender import RELAY


class RelayService:
    """The relay's parts, assembled: the app wires in ``on_record``, ``forward`` and ``run``; the routers call the parts."""

    def __init__(self, settings: Settings, db: async_sessionmaker[AsyncSession], journal: Journal, messenger: Messenger,
                 journey: Journey, catalog: Catalog, quiz: Quiz) -> None:
        roster = load_roster(settings.operators_config)
        hours = WorkingHours.parse(settings.working_hours, settings.working_days, settings.timezone)
        self.sla = Sla(db, journal, hours, minutes=settings.sla_minutes, escalate_minutes=settings.sla_escalate_minutes,
                       roster=roster, lang=settings.default_language)
        self.chat = OperatorChat(settings, db, journal, messenger, quiz, roster, self.sla)
        self.albums = Albums()
        self.topics = Topics(self.chat)
        to_group = Copier(messenger.bot)
        self.pacer = Pacer(self.chat, self.topics, to_group)
        self.buyers = BuyerMessages(self.chat, self.topics, to_group, self.pacer)
        to_buyers = Copier(messenger.bot, partial(messenger.sender.call, kind=RELAY))  # through outages, by the relay's rule
        self.managers = ManagerMessages(self.chat, self.topics, to_buyers, self.albums)
        self.actions = Actions(self.chat, self.topics, self.managers, QuickReplies(self.chat, self.managers, catalog), journey)
        self.worker = RelayWorker(self.chat, self.topics, self.pacer)
        self.on_record = self.worker.on_record
        self.check_sla = self.worker.check_sla

    async def forward(self, lead: Lead, message: Inbound) -> None:
        """The journey's hook (:class:`bot.ports.BuyerRelay`): a free buyer message for the managers."""
        await self.buyers.forward(lead, message)

    async def notice(self, lead: Lead, text: str) -> None:
        """:class:`bot.ports.OperatorTopic`: a notice queued for the lead's topic (nothing without an operator chat)."""
        if self.chat.chat_ids:
            await self.worker.notice(lead, text)

    async def lead_in_topic(self, message: Message) -> Lead | None:
        """:class:`bot.ports.OperatorTopic`: the lead an operator-chat message is about."""
        found = await self.topics.lead_of(message) if message.chat.id in self.chat.chat_ids else None
        return found[1] if found else None

    async def run(self, stop: asyncio.Event) -> None:
        """The relay's background work (``App.workers``: the worker and the pacer), until ``stop``."""
        if not self.chat.chat_ids:
            return
        try:
            await self.actions.announce_commands()
            await asyncio.gather(self.worker.run(stop), self.pacer.run(stop))
        finally:
            await self.albums.flush()

    async def close(self) -> None:
        """Release the groups' budgets (their Redis connections)."""
        await self.chat.budgets.close()
