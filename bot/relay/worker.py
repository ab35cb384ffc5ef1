"""The relay's background work: topics planned on arrival, lead cards refreshed after lead events, SLA pings
(queued for the pacer, urgent).

Lead events only mark what is to be done (in the transaction of the event, as the journal's
subscriber); the worker's rounds do it, so a buyer's update never waits on the operator chat.
"""
from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog
from aiogram.exceptions import TelegramAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import Lead, LeadEvent
from bot.journal import GREETED, QUESTION_ASKED, Record
from bot.loops import Loop
from bot.relay import store
from bot.relay.chat import OperatorChat
from bot.relay.models import RelayTopic
from bot.relay.pacer import Pacer
from bot.relay.topics import Topics

log = structlog.get_logger(__name__)

POLL = 1.0  # seconds between rounds


class RelayWorker:
    def __init__(self, chat: OperatorChat, topics: Topics, pacer: Pacer) -> None:
        self.chat = chat
        self.topics = topics
        self.pacer = pacer
        self.poll = POLL

    async def on_record(self, session: AsyncSession, lead: Lead, record: Record) -> None:
        """Journal subscriber: SLA waits; a topic planned on arrival; a card to refresh after a lead event."""
        if not self.chat.chat_ids:
            return
        await self.chat.sla.on_record(session, lead, record)
        if isinstance(record, LeadEvent) and record.kind != QUESTION_ASKED:
            if record.kind == GREETED and self.chat.settings.topic_on_arrival:
                await store.plan_topic(session, lead.id, self.chat.group(lead, None))
            else:
                await store.mark_stale(session, lead.id)

    async def check_sla(self) -> int:
        """Queue the overdue pings this instance claimed (urgent); returns how many."""
        pings = await self.chat.sla.claim_due()
        for ping in pings:
            await self.notice(ping.lead, ping.text, urgent=True)
        return len(pings)

    async def notice(self, lead: Lead, text: str, *, urgent: bool = False) -> None:
        """Queue a notice (HTML) for the lead's topic."""
        async with self.chat.db() as session:
            topic = await store.topic(session, lead.id)
        await self.pacer.notice(lead, self.chat.group(lead, topic), text, urgent=urgent)

    async def tick(self) -> None:
        """One round: topics planned on arrival, cards after lead events, SLA pings."""
        async with self.chat.db() as session:  # read first: an idle round takes no write turn
            waiting = await store.topics_to_refresh(session, self.chat.chat_ids, limit=1)
        topics: Sequence[RelayTopic] = []
        if waiting:
            async with self.chat.db.begin() as session:
                topics = await store.topics_to_refresh(session, self.chat.chat_ids)
                for topic in topics:
                    topic.stale = False
        for topic in topics:
            try:
                await self.topics.refresh_card(topic.lead_id)
            except TelegramAPIError as exc:
                log.error("relay.card_failed", lead_id=topic.lead_id, error=str(exc))
        await self.check_sla()

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until ``stop``."""
        await Loop("relay", self.tick, every=self.poll).run(stop)
