"""Response-time SLA: waits open on a buyer's question, close on a manager's reply, ping when overdue.

A wait opens with the journey's ``question_asked`` event and closes with the first manager
message logged in the journal (from the operator chat or anywhere else), so both happen in
the transaction of what caused them. Deadlines and response times count working time only.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import median

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import metrics
from bot.db.base import utcnow
from bot.db.models import Lead, LeadEvent, Message
from bot.hours import WorkingHours
from bot.journal import QUESTION_ASKED, SLA_BREACHED, Journal, Record
from bot.relay import store
from bot.relay.card import lead_name, mention
from bot.relay.config import Operator, Roster
from bot.relay.models import RelayTopic, RelayWait
from bot.texts import Safe, duration, plural, t

SLOWEST = 5


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (``share`` in 0..1) of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def topic_link(topic: RelayTopic) -> str | None:
    """``https://t.me/c/…`` to a lead's topic (or card), for supergroups."""
    target = topic.thread_id or topic.card_message_id
    text = str(topic.chat_id)
    return f"https://t.me/c/{text[4:]}/{target}" if target and text.startswith("-100") else None


@dataclass(frozen=True)
class Ping:
    """An overdue wait this instance claimed: what to post in the lead's topic."""

    lead: Lead
    text: str


class Sla:
    def __init__(self, db: async_sessionmaker[AsyncSession], journal: Journal, hours: WorkingHours, *, minutes: int,
                 escalate_minutes: int, roster: Roster, lang: str, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.journal = journal
        self.hours = hours
        self.minutes = minutes
        self.escalate_minutes = escalate_minutes
        self.roster = roster
        self.lang = lang
        self.clock = clock

    # ------------------------------------------------------------ journal
    async def on_record(self, session: AsyncSession, lead: Lead, record: Record) -> None:
        """Open a wait on a buyer's question; close it on a manager's reply."""
        if isinstance(record, LeadEvent) and record.kind == QUESTION_ASKED and not lead.is_banned:
            if await store.open_wait(session, lead.id) is None:
                started = lead.awaiting_reply_since or self.clock()
                session.add(RelayWait(lead_id=lead.id, started_at=started, in_hours=self.hours.contains(started),
                                      due_at=self.hours.add(started, self.minutes),
                                      escalate_at=self.hours.add(started, self.escalate_minutes)))
        elif (isinstance(record, Message) and record.author == "manager" and record.direction == "out"
              and not record.is_internal and "edit_of" not in record.meta):
            await self.answer(session, lead, record.meta.get("manager_tg_id"), record.author_name)

    async def answer(self, session: AsyncSession, lead: Lead, manager_tg_id: int | None, manager_name: str | None) -> None:
        """The lead got a manager's answer: record the first-response time."""
        lead.awaiting_reply_since = None
        wait = await store.open_wait(session, lead.id)
        if wait is not None:
            now = self.clock()
            wait.closed_at, wait.answered_by, wait.answered_by_name = now, manager_tg_id, manager_name
            wait.response_seconds = round(self.hours.between(wait.started_at, now))

    async def dismiss(self, session: AsyncSession, lead: Lead) -> None:
        """No answer is expected any more (conversation closed, buyer banned)."""
        wait = await store.open_wait(session, lead.id)
        if wait is not None:
            wait.closed_at, wait.dismissed = self.clock(), True
        lead.awaiting_reply_since = None

    # -------------------------------------------------------------- pings
    async def responsible(self, session: AsyncSession, lead: Lead) -> Operator | None:
        """The lead's manager: its amoCRM responsible user, else whoever answered it last."""
        operator = self.roster.by_crm(lead.responsible_user_id)
        if operator is None:
            last = await store.last_answer(session, lead.id)
            operator = self.roster.by_tg(last.answered_by) if last and last.answered_by else None
        return operator

    async def claim_due(self) -> list[Ping]:
        """Claim every overdue ping not sent yet (each exactly once across instances), recording ``sla_breached``."""
        now = self.clock()
        async with self.db() as session:
            waits = await store.due_waits(session, now)
        pings = []
        for wait in waits:
            level = 2 if wait.escalate_at <= now else 1
            async with self.db.begin() as session:
                if not await store.claim_level(session, wait.id, wait.level, level):
                    continue
                lead = await session.get(Lead, wait.lead_id)
                minutes = round(self.hours.between(wait.started_at, now) / 60)
                manager = await self.responsible(session, lead)
                targets = [manager] if level == 1 and manager else self.roster.heads if level == 2 else []
                who = Safe(", ".join(mention(o.tg_id, o.name, self.lang) for o in targets)) if targets else t(self.lang, "relay.sla.everyone")
                if level == 1:
                    text = t(self.lang, "relay.sla.ping", who=who, minutes=minutes)
                else:
                    text = t(self.lang, "relay.sla.escalate", who=who, minutes=minutes,
                             manager=manager.name if manager else t(self.lang, "relay.card.nobody"))
                assignee = targets[0].amocrm_user_id if targets else lead.responsible_user_id
                await self.journal.event(session, lead, SLA_BREACHED, level=level, minutes=minutes,
                                         manager=manager.name if manager else None, responsible_user_id=assignee)
            metrics.SLA_BREACHES.labels(str(level)).inc()
            pings.append(Ping(lead, text))
        return pings

    # -------------------------------------------------------------- stats
    def _period(self, key: str, waits: Sequence[RelayWait]) -> str:
        period = t(self.lang, f"relay.stats.{key}")
        if not waits:
            return t(self.lang, "relay.stats.period_empty", period=period)
        seconds = [w.response_seconds for w in waits]
        return t(self.lang, "relay.stats.period", period=period, median=duration(median(seconds), self.lang),
                 p90=duration(percentile(seconds, 0.9), self.lang), count=plural(self.lang, "relay.stats.answers", len(seconds)))

    async def stats(self) -> str:
        """/stats: today's and this week's median and p90 first response, per manager, and who waits longest."""
        now = self.clock()
        today = self.hours.start_of_day(now)
        week = today - timedelta(days=today.weekday())
        async with self.db() as session:
            answered = await store.answered_since(session, week)
            waiting = await store.open_waits(session)
        lines = [t(self.lang, "relay.stats.title"),
                 self._period("today", [w for w in answered if w.closed_at >= today]), self._period("week", answered)]
        by_manager: dict[str, list[float]] = {}
        for wait in answered:
            by_manager.setdefault(wait.answered_by_name or "?", []).append(wait.response_seconds)
        if by_manager:
            lines.append("\n" + t(self.lang, "relay.stats.managers"))
            for name, seconds in sorted(by_manager.items(), key=lambda item: median(item[1])):
                lines.append(t(self.lang, "relay.stats.manager", name=name, median=duration(median(seconds), self.lang),
                               p90=duration(percentile(seconds, 0.9), self.lang), count=plural(self.lang, "relay.stats.answers", len(seconds))))
        lines.append("\n" + t(self.lang, "relay.stats.open", count=len(waiting)))
        if waiting:
            lines.append(t(self.lang, "relay.stats.slowest"))
            for wait, lead, topic in waiting[:SLOWEST]:
                name = lead_name(lead, self.lang)
                link = topic_link(topic) if topic else None
                label = Safe(t(self.lang, "relay.stats.link", url=link, name=name)) if link else name
                lines.append(t(self.lang, "relay.stats.waiting", topic=label,
                               duration=duration(self.hours.between(wait.started_at, now), self.lang)))
        return "\n".join(lines)
