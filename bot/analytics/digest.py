"""The weekly digest (``REPORT_SCHEDULE``, e.g. ``mon 09:00`` in ``TIMEZONE``): once per scheduled moment,
however many instances run and however often they restart.

Each moment is a row of ``analytics_digests``: the instance that inserts it (or takes over a lease that
ran out: its claimer died) sends the digest and marks it sent. A moment missed while every instance
was down is still sent within :data:`CATCH_UP`; an older one is skipped.
"""
from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.analytics.models import Digest
from bot.analytics.period import Period
from bot.db.base import utcnow
from bot.db.sql import insert_ignore

log = structlog.get_logger(__name__)

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
LEASE = timedelta(minutes=10)  # how long a claimer may take to send before another instance takes over
CATCH_UP = timedelta(days=1)
POLL = 60.0  # seconds between looks at the clock (and at failed sends to retry)
Send = Callable[[Period], Awaitable[None]]


@dataclass(frozen=True)
class Schedule:
    weekday: int  # 0 = Monday
    at: time
    zone: ZoneInfo

    @classmethod
    def parse(cls, value: str, zone: ZoneInfo) -> Schedule | None:
        """``"mon 09:00"`` (validated by the settings); None for ``"off"``."""
        if value == "off":
            return None
        day, clock = value.split()
        hours, minutes = clock.split(":")
        return cls(WEEKDAYS.index(day), time(int(hours), int(minutes)), zone)

    def latest(self, now: datetime) -> datetime:
        """The last scheduled moment at or before ``now`` (UTC)."""
        local = now.astimezone(self.zone)
        day = local.date() - timedelta(days=(local.weekday() - self.weekday) % 7)
        moment = self._at(day)
        return moment if moment <= now else self._at(day - timedelta(days=7))

    def _at(self, day: date) -> datetime:
        return datetime.combine(day, self.at, tzinfo=self.zone).astimezone(ZoneInfo("UTC"))

    def period(self, moment: datetime) -> Period:
        """What a digest sent at ``moment`` covers: the seven local days before its day."""
        day = moment.astimezone(self.zone).date()
        return Period(day - timedelta(days=7), day - timedelta(days=1), self.zone)


class WeeklyDigest:
    """``run_once()`` looks at the clock once (the background loop calls it every :data:`POLL` seconds)."""

    def __init__(self, db: async_sessionmaker[AsyncSession], schedule: Schedule, send: Send,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.schedule = schedule
        self.send = send
        self.clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    async def _claim(self, slot: str, now: datetime) -> bool:
        async with self.db.begin() as session:
            inserted = await session.execute(insert_ignore(session, Digest).values(slot=slot, owner=self.owner, lease_until=now + LEASE))
            if inserted.rowcount == 1:
                return True
            taken = await session.execute(update(Digest).where(Digest.slot == slot, Digest.sent_at.is_(None), Digest.lease_until < now)
                                          .values(owner=self.owner, lease_until=now + LEASE))
            return taken.rowcount == 1

    async def _finish(self, slot: str, *, sent: bool) -> None:
        values = {"sent_at": self.clock()} if sent else {"lease_until": self.clock()}  # failed: free it for the next look
        async with self.db.begin() as session:
            await session.execute(update(Digest).where(Digest.slot == slot, Digest.owner == self.owner).values(**values))

    async def run_once(self) -> bool:
        """Send the digest if it is due and nobody has; True if this instance sent it."""
        now = self.clock()
        moment = self.schedule.latest(now)
        if now - moment > CATCH_UP:
            return False
        slot = moment.astimezone(self.schedule.zone).isoformat(timespec="minutes")
        if not await self._claim(slot, now):
            return False
        try:
            await self.send(self.schedule.period(moment))
        except Exception:
            log.exception("analytics.digest_failed", slot=slot, note=f"retried within {POLL:.0f} s")
            await self._finish(slot, sent=False)
            return False
        await self._finish(slot, sent=True)
        log.info("analytics.digest_sent", slot=slot)
        return True

