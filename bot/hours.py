"""Quiet hours in the buyer's time zone (``QUIET_HOURS``) and working hours (``WORKING_HOURS``, ``WORKING_DAYS``, ``TIMEZONE``): SLA deadlines and response times count only them,
task deadlines start at the next opening, and the buyer is promised an answer the hours allow."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from bot.texts import plural, raw

HOURS_PATTERN = r"^([01]\d|2[0-4]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$"
DAYS_PATTERN = r"^[1-7](-[1-7])?(,[1-7](-[1-7])?)*$"
_MAX_DAYS = 366  # a wait longer than a year is not measured to the second


def parse_hours(value: str) -> tuple[int, int]:
    """``"09:00-19:00"`` → minutes from midnight ``(540, 1140)``; ``24:00`` ends at midnight."""
    match = re.match(HOURS_PATTERN, value.strip())
    if match is None:
        raise ValueError("must look like 09:00-19:00")
    start, end = (int(match[1]) * 60 + int(match[2])), (int(match[3]) * 60 + int(match[4]))
    if not 0 <= start < end <= 24 * 60:
        raise ValueError("the day must start before it ends, within 00:00-24:00")
    return start, end


def parse_days(value: str) -> frozenset[int]:
    """``"1-5"`` or ``"1,2,3,4,5"`` (ISO weekdays, 1 = Monday) → ``{1, 2, 3, 4, 5}``."""
    if re.match(DAYS_PATTERN, value.replace(" ", "")) is None:
        raise ValueError("must be ISO weekdays like 1-5 or 1,2,3,4,5,6 (1 = Monday)")
    days: set[int] = set()
    for part in value.replace(" ", "").split(","):
        first, _, last = part.partition("-")
        days.update(range(int(first), int(last or first) + 1))
    return frozenset(days)


@dataclass(frozen=True)
class WorkingHours:
    start: int  # minutes from local midnight
    end: int
    days: frozenset[int]
    tz: ZoneInfo

    @classmethod
    def parse(cls, hours: str, days: str, tz: str) -> WorkingHours:
        start, end = parse_hours(hours)
        return cls(start, end, parse_days(days), ZoneInfo(tz))

    def _window(self, day: date) -> tuple[datetime, datetime] | None:
        """The working interval of a local date, or None on a day off."""
        if day.isoweekday() not in self.days:
            return None
        midnight = datetime.combine(day, time(), tzinfo=self.tz)
        return midnight + timedelta(minutes=self.start), midnight + timedelta(minutes=self.end)

    def contains(self, moment: datetime) -> bool:
        """Whether ``moment`` falls within working hours."""
        return self._within(moment.astimezone(self.tz), 0)

    def _next_start(self, local: datetime) -> datetime | None:
        """The first opening after ``local`` (within a week)."""
        for offset in range(8):
            window = self._window(local.date() + timedelta(days=offset))
            if window is not None and window[0] > local:
                return window[0]
        return None

    def _within(self, local: datetime, minutes: float) -> bool:
        """Whether ``local`` is in working hours with ``minutes`` of them left that day."""
        window = self._window(local.date())
        return window is not None and window[0] <= local and local + timedelta(minutes=minutes) <= window[1]

    def deadline(self, moment: datetime, minutes: float) -> datetime:
        """``minutes`` after ``moment``, or after the next opening when ``moment`` is outside working hours."""
        local = moment.astimezone(self.tz)
        start = local if self._within(local, 0) else self._next_start(local) or local
        return start + timedelta(minutes=minutes)

    def answer_by(self, moment: datetime, minutes: int, lang: str) -> str:
        """When a manager answers, as the buyer reads it (plain text): «в течение 15 минут» when today's working hours
        have that long left, else «сегодня / завтра / в понедельник после 9:00»."""
        local = moment.astimezone(self.tz)
        start = None if self._within(local, minutes) else self._next_start(local)
        if start is None:
            return str(raw(lang, "hours.within")).format(minutes=plural(lang, "hours.minutes", minutes))
        clock = f"{start.hour}:{start.minute:02d}"
        days = (start.date() - local.date()).days
        if days <= 1:
            return str(raw(lang, "hours.today" if days == 0 else "hours.tomorrow")).format(time=clock)
        return str(raw(lang, "hours.on_day")).format(day=raw(lang, "hours.days")[start.weekday()], time=clock)

    def add(self, moment: datetime, minutes: float) -> datetime:
        """The moment ``minutes`` of working time after ``moment``."""
        left = timedelta(minutes=minutes)
        local = moment.astimezone(self.tz)
        for offset in range(_MAX_DAYS):
            window = self._window(local.date() + timedelta(days=offset))
            if window is None:
                continue
            begin = max(window[0], local)
            if begin >= window[1]:
                continue
            if begin + left <= window[1]:
                return begin + left
            left -= window[1] - begin
        return moment + timedelta(minutes=minutes)  # no working day within a year: plain time

    def between(self, first: datetime, last: datetime) -> float:
        """Working seconds from ``first`` to ``last``."""
        first, last = first.astimezone(self.tz), last.astimezone(self.tz)
        total = 0.0
        day = first.date()
        while day <= last.date() and (day - first.date()).days < _MAX_DAYS:
            window = self._window(day)
            if window is not None:
                begin, end = max(window[0], first), min(window[1], last)
                total += max(0.0, (end - begin).total_seconds())
            day += timedelta(days=1)
        return total

    def start_of_day(self, moment: datetime) -> datetime:
        """Local midnight of ``moment``'s day (for "today" in /stats)."""
        return datetime.combine(moment.astimezone(self.tz).date(), time(), tzinfo=self.tz)


ALWAYS = WorkingHours.parse("00:00-24:00", "1-7", "UTC")  # no working hours configured: always open

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
