"""Time: send times in TIMEZONE, step delays like ``3d`` (quiet hours in the buyer's time zone: :mod:`bot.hours`)."""
from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

Clock = Callable[[], datetime]  # the current UTC time (tests inject their own)
_DURATION = re.compile(r"^\s*(\d+)\s*([dhms])\s*$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def parse_when(value: str | datetime, zone: str) -> datetime:
    """``2026-12-01 10:00`` (in ``zone`` unless an offset is given) or a datetime → aware UTC."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).strip().replace("T", " "))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(zone))
    return moment.astimezone(timezone.utc)


def parse_duration(value: str | int) -> timedelta:
    """``1d``, ``12h``, ``30m``, ``45s`` or seconds as a number."""
    if isinstance(value, int):
        return timedelta(seconds=value)
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(f"not a duration: {value!r} (use 1d, 12h, 30m)")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
