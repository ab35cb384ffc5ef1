"""Time: quiet hours in the buyer's time zone, send times in TIMEZONE, step delays like ``3d``."""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

# A buyer's time zone is known from the delivery city of the quiz; others get TIMEZONE.
CITY_ZONES = {
    "калининград": "Europe/Kaliningrad",
    "самара": "Europe/Samara", "ижевск": "Europe/Samara", "ульяновск": "Europe/Ulyanovsk",
    "саратов": "Europe/Saratov", "астрахань": "Europe/Astrakhan", "волгоград": "Europe/Volgograd",
    "екатеринбург": "Asia/Yekaterinburg", "челябинск": "Asia/Yekaterinburg", "пермь": "Asia/Yekaterinburg",
    "уфа": "Asia/Yekaterinburg", "тюмень": "Asia/Yekaterinburg", "оренбург": "Asia/Yekaterinburg",
    "курган": "Asia/Yekaterinburg", "сургут": "Asia/Yekaterinburg", "магнитогорск": "Asia/Yekaterinburg",
    "омск": "Asia/Omsk",
    "новосибирск": "Asia/Novosibirsk", "томск": "Asia/Tomsk", "барнаул": "Asia/Barnaul",
    "кемерово": "Asia/Novokuznetsk", "новокузнецк": "Asia/Novokuznetsk",
    "красноярск": "Asia/Krasnoyarsk", "абакан": "Asia/Krasnoyarsk",
    "иркутск": "Asia/Irkutsk", "улан-удэ": "Asia/Irkutsk",
    "чита": "Asia/Chita", "якутск": "Asia/Yakutsk", "благовещенск": "Asia/Yakutsk",
    "владивосток": "Asia/Vladivostok", "хабаровск": "Asia/Vladivostok", "южно-сахалинск": "Asia/Sakhalin",
    "магадан": "Asia/Magadan", "петропавловск-камчатский": "Asia/Kamchatka",
    "алматы": "Asia/Almaty", "астана": "Asia/Almaty", "ташкент": "Asia/Tashkent", "бишкек": "Asia/Bishkek",
    "минск": "Europe/Minsk", "ереван": "Asia/Yerevan", "тбилиси": "Asia/Tbilisi", "баку": "Asia/Baku",
}
Clock = Callable[[], datetime]  # the current UTC time (tests inject their own)
_DURATION = re.compile(r"^\s*(\d+)\s*([dhms])\s*$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def zone_of(city: object, default: str) -> ZoneInfo:
    """The buyer's time zone from their city, else ``default``."""
    name = CITY_ZONES.get(str(city or "").strip().lower().replace("ё", "е"), default)
    return ZoneInfo(name)


@dataclass(frozen=True)
class QuietHours:
    """A nightly window like 21:00–09:00 (local time) when marketing messages wait."""

    start: time
    end: time

    @classmethod
    def parse(cls, value: str | None) -> QuietHours | None:
        if not value:
            return None
        start, end = (time.fromisoformat(part.strip().zfill(5)) for part in value.split("-"))
        return cls(start, end) if start != end else None

    def _inside(self, moment: time) -> bool:
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end

    def until(self, now: datetime, zone: ZoneInfo) -> datetime | None:
        """When the window ends (UTC) if ``now`` falls inside it in ``zone``, else None."""
        local = now.astimezone(zone)
        if not self._inside(local.time()):
            return None
        end = datetime.combine(local.date(), self.end, tzinfo=zone)
        if end <= local:
            end = datetime.combine(local.date() + timedelta(days=1), self.end, tzinfo=zone)
        return end.astimezone(timezone.utc)


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
