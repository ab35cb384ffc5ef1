"""The relay's background work: topics planned on arrival, lead cards refreshed after lead events, SLA pings
(queued for the pacer, urgent).

Lead events only mark what is to be done (in the transaction of the event, as the journal's
subscriber); the worker's rounds do it, so a buyer's update never waits on the operator chat.
"""
from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog
from aiogram.exceptions import TelegramAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.base import utcnow
from bot.db.models import Lead, LeadEvent
from bot.journal import GREETED, QUESTION_ASKED, Record
from bot.loops import Loop
from bot.relay import store
from bot.relay.chat import OperatorChat
from bot.relay.pacer import Pacer
from bot.relay.topics import Topics

log = structlog.get_logger(__name__)

POLL = 1.0  # seconds between rounds
LEASE = 120.0  # seconds a round holds the topics it creates or refreshes (a topic may wait for the group's budget)


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
        """One round: topics planned on arrival, cards after lead events (leased: two instances never both create or
        refresh one), SLA pings."""
        now = utcnow()
        async with self.chat.db() as session:  # read first: an idle round takes no write turn
            waiting = await store.any_to_refresh(session, self.chat.chat_ids, now)
        if waiting:
            lease_until = now + timedelta(seconds=LEASE)
            async with self.chat.db.begin() as session:
                lead_ids = await store.claim_to_refresh(session, self.chat.chat_ids, now, lease_until)
            try:
                for lead_id in lead_ids:
                    try:
                        await self.topics.refresh_card(lead_id)
                    except TelegramAPIError as exc:
                        log.error("relay.card_failed", lead_id=lead_id, error=str(exc))
            finally:
                if lead_ids:
                    async with self.chat.db.begin() as session:
                        await store.release_refreshed(session, lead_ids, lease_until)
        await self.check_sla()

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until ``stop``."""
        await Loop("relay", self.tick, every=self.poll).run(stop)
