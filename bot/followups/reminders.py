"""Reminders a manager sets in the lead's topic (``/remind <when> <what>``), or as an amoCRM task of the type
``REMINDER_TASK_TYPE`` on the buyer's deal (its text at its deadline) — the bot reminds the buyer then.

``when`` is in ``TIMEZONE``: ``25.12 10:00``, ``25.12.2026 10:00``, ``завтра 10:00`` / ``tomorrow 10:00``, ``10:00``
(the next such time), or a delay ``+30m``, ``+2h``, ``+3d``. The reminder is a ``followups`` row keyed by the
command's message (an amoCRM task's by the task: moved with its deadline, cancelled when it is completed or deleted),
so a replayed update or webhook sets nothing twice; it fires once, across restarts.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import Lead
from bot.followups import store
from bot.followups.models import REMINDER
from bot.journal import TASK_OPEN
from bot.texts import t

MAX_AHEAD = timedelta(days=366)
LATE = timedelta(hours=1)  # an amoCRM task whose deadline passed longer ago reminds no one
_DELAY = re.compile(r"^\+(\d{1,4})([mhd])$")
_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_DATE = re.compile(r"^(\d{1,2})\.(\d{1,2})(?:\.(\d{4}))?$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


class BadWhen(ValueError):
    """The reminder's time could not be read, or is not ahead."""


def parse_when(args: str, now: datetime, tz: ZoneInfo) -> tuple[datetime, str]:
    """``"25.12 10:00 Оплатить счёт"`` → (the moment, ``"Оплатить счёт"``); :class:`BadWhen` if unreadable or not ahead."""
    words = args.split()
    local = now.astimezone(tz)
    moment, used = None, 0
    if words and (delay := _DELAY.match(words[0])):
        moment, used = now + timedelta(**{_UNITS[delay[2]]: int(delay[1])}), 1
    elif len(words) >= 2 and (clock := _CLOCK.match(words[1])):
        hour, minute = int(clock[1]), int(clock[2])
        if words[0].lower() in ("завтра", "tomorrow"):
            moment, used = _at(local.date() + timedelta(days=1), hour, minute, tz), 2
        elif day := _DATE.match(words[0]):
            moment, used = _on(day, local, hour, minute, tz), 2
    if moment is None and words and (clock := _CLOCK.match(words[0])):
        moment, used = _at(local.date(), int(clock[1]), int(clock[2]), tz), 1
        if moment <= now:
            moment += timedelta(days=1)
    what = " ".join(words[used:])
    if moment is None or not what:
        raise BadWhen("unreadable")
    if not now < moment <= now + MAX_AHEAD:
        raise BadWhen("not ahead")
    return moment, what


def _at(day: date, hour: int, minute: int, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=tz)


def _on(day: re.Match[str], local: datetime, hour: int, minute: int, tz: ZoneInfo) -> datetime | None:
    """``DD.MM[.YYYY]``: that date (without a year: this year's, or next year's once it has passed)."""
    try:
        moment = _at(date(int(day[3] or local.year), int(day[2]), int(day[1])), hour, minute, tz)
    except ValueError:
        return None
    if day[3] is None and moment < local:
        moment = moment.replace(year=moment.year + 1)
    return moment


class Reminders:
    def __init__(self, db: async_sessionmaker[AsyncSession], clock: Callable[[], datetime], tz: ZoneInfo, lang: str,
                 wake: Callable[[], None]) -> None:
        self.db = db
        self.clock = clock
        self.tz = tz
        self.lang = lang  # the managers'
        self.wake = wake

    async def add(self, lead: Lead | None, chat_id: int, message_id: int, manager: str, args: str | None) -> str:
        """``/remind`` in a topic: schedule it; returns the answer for the topic (done, or what to write instead)."""
        if lead is None:
            return t(self.lang, "followups.reminder.no_topic")
        now = self.clock()
        try:
            moment, what = parse_when(args or "", now, self.tz)
        except BadWhen as exc:
            return t(self.lang, "followups.reminder.past" if str(exc) == "not ahead" else "followups.reminder.usage")
        async with self.db.begin() as session:
            await store.schedule(session, lead_id=lead.id, kind=REMINDER, key=f"reminder:{chat_id}:{message_id}", due_at=moment,
                                 now=now, data={"text": what, "manager": manager})
        self.wake()
        return t(self.lang, "followups.reminder.set", when=moment.astimezone(self.tz).strftime("%d.%m.%Y %H:%M"), what=what)

    async def from_task(self, session: AsyncSession, lead: Lead, task: dict[str, Any]) -> bool:
        """An amoCRM task of the reminder type changed (``crm_task_changed``): an open one reminds the buyer at its deadline,
        a completed or deleted one is cancelled; True if a reminder was added or moved."""
        key, now = f"crmtask:{task['task_id']}", self.clock()
        if task.get("state") != TASK_OPEN or not task.get("complete_till"):
            await store.cancel_key(session, key, f"the amoCRM task is {task.get('state')}")
            return False
        due = datetime.fromtimestamp(task["complete_till"], UTC)
        if due < now - LATE:
            return False
        data = {"text": task.get("text") or "", "manager": "amoCRM", "task_id": task["task_id"]}
        return (await store.schedule(session, lead_id=lead.id, kind=REMINDER, key=key, due_at=max(due, now), now=now, data=data)
                or await store.reschedule(session, key, max(due, now), data))
