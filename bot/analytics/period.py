"""Reporting periods: whole local days in the supplier's time zone, and local days and weeks in SQL."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import case, literal

from bot.db.sql import epoch

EPOCH_DAY = date(1970, 1, 1)
DAY = 86400


@dataclass(frozen=True)
class Period:
    """Local dates ``first``..``last`` (both included) in ``zone``."""

    first: date
    last: date
    zone: ZoneInfo

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise ValueError(f"the period ends ({self.last}) before it starts ({self.first})")

    @classmethod
    def last_days(cls, days: int, now: datetime, zone: ZoneInfo) -> Period:
        """The ``days`` local days up to and including today."""
        today = now.astimezone(zone).date()
        return cls(today - timedelta(days=days - 1), today, zone)

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    @property
    def start(self) -> datetime:
        """The first moment (UTC) of the period."""
        return midnight(self.first, self.zone)

    @property
    def end(self) -> datetime:
        """The moment (UTC) right after the period."""
        return midnight(self.last + timedelta(days=1), self.zone)

    def previous(self) -> Period:
        """The period of the same length just before this one."""
        return Period(self.first - timedelta(days=self.days), self.first - timedelta(days=1), self.zone)

    def dates(self) -> list[date]:
        return [self.first + timedelta(days=offset) for offset in range(self.days)]


def midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)


def _offset(moment: datetime, zone: ZoneInfo) -> int:
    return int(moment.astimezone(zone).utcoffset().total_seconds())  # type: ignore[union-attr]


def _changes(start: datetime, end: datetime, zone: ZoneInfo) -> list[tuple[datetime, int]]:
    """The zone's UTC offset at ``start`` and every change of it before ``end``: ``[(from, seconds)]``."""
    changes = [(start, _offset(start, zone))]
    moment = start
    while moment < end:
        following = min(moment + timedelta(days=1), end)
        if _offset(following, zone) != changes[-1][1]:
            low, high = moment, following  # the change is within this day: find its second
            while high - low > timedelta(seconds=1):
                middle = low + (high - low) / 2
                low, high = (middle, high) if _offset(middle, zone) == changes[-1][1] else (low, middle)
            changes.append((high, _offset(high, zone)))
        moment = following
    return changes


def local_day(column: Any, period: Period) -> Any:
    """Days since 1970-01-01 of ``column``'s local date, for moments within ``period`` (DST-exact)."""
    changes = _changes(period.start, period.end, period.zone)
    if len(changes) == 1:
        offset: Any = literal(changes[0][1])
    else:
        offset = case(*[(column < moment, value) for (moment, _), (_, value) in zip(changes[1:], changes)], else_=changes[-1][1])
    return (epoch(column) + offset) // DAY


def local_week(day: Any) -> Any:
    """Weeks (Monday to Sunday) since the one of 1970-01-01, from a :func:`local_day` value."""
    return (day + 3) // 7


def day_of(index: int) -> date:
    return EPOCH_DAY + timedelta(days=int(index))


def monday_of(week: int) -> date:
    return EPOCH_DAY + timedelta(days=int(week) * 7 - 3)
