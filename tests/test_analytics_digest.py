"""The weekly digest: REPORT_SCHEDULE in TIMEZONE, sent once per week whatever the instances and restarts."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.analytics.digest import Schedule, WeeklyDigest
from bot.analytics.period import Period
from bot.analytics.service import Analytics
from bot.app import App
from bot.catalog.render import CatalogRenderer
from bot.config import DEFAULT_QUIZ, ConfigError, load_settings
from bot.quiz import load_quiz
from bot.sandbox.telegram import TelegramSandbox
from tests.analytics_support import analytics_settings, seed_history
from tests.crm_support import db  # noqa: F401  (a fixture: the migrated database)
from tests.relay_support import OLGA, OPERATORS, FakeClock

MOSCOW, BERLIN = ZoneInfo("Europe/Moscow"), ZoneInfo("Europe/Berlin")
MONDAY = date(2026, 11, 23)


def at(day: date, hour: int, minute: int = 0, zone: ZoneInfo = MOSCOW) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone).astimezone(UTC)


def test_schedule_reads_the_setting_and_knows_its_last_moment_and_week() -> None:
    schedule = Schedule.parse("mon 09:00", MOSCOW)
    assert schedule is not None and Schedule.parse("off", MOSCOW) is None
    assert schedule.latest(at(MONDAY, 9, 0)) == at(MONDAY, 9, 0)
    assert schedule.latest(at(MONDAY, 8, 59)) == at(MONDAY - timedelta(days=7), 9, 0)
    assert schedule.latest(at(MONDAY + timedelta(days=3), 23, 0)) == at(MONDAY, 9, 0)
    assert schedule.period(at(MONDAY, 9, 0)) == Period(date(2026, 11, 16), date(2026, 11, 22), MOSCOW)
    berlin = Schedule.parse("sun 02:30", BERLIN)  # the clocks go back on 25.10.2026: 02:30 happens twice
    assert berlin.latest(at(date(2026, 10, 26), 12, 0, BERLIN)) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert berlin.latest(at(date(2026, 11, 2), 12, 0, BERLIN)) == datetime(2026, 11, 1, 1, 30, tzinfo=UTC)
    for wrong in ("monday 09:00", "mon 9", "mon 24:00"):
        with pytest.raises(ConfigError, match="REPORT_SCHEDULE"):
            load_settings(_env_file=None, REPORT_SCHEDULE=wrong)


class Outbox:
    """What the digests sent (the period of each), and a way to make the next send fail or hang."""

    def __init__(self) -> None:
        self.sent: list[Period] = []
        self.fail = False
        self.hang = False
        self.hanging = asyncio.Event()

    async def send(self, period: Period) -> None:
        if self.fail:
            self.fail = False
            raise ConnectionError("Telegram is down")
        if self.hang:
            self.hang = False
            self.hanging.set()
            await asyncio.Event().wait()  # until the instance dies
        self.sent.append(period)


def instance(db: async_sessionmaker[AsyncSession], outbox: Outbox, clock: FakeClock) -> WeeklyDigest:
    return WeeklyDigest(db, Schedule.parse("mon 09:00", MOSCOW), outbox.send, clock)  # type: ignore[arg-type]


async def test_once_per_week_across_instances_and_restarts(db: async_sessionmaker[AsyncSession]) -> None:
    outbox, clock = Outbox(), FakeClock(at(MONDAY, 8, 59))
    first, second = instance(db, outbox, clock), instance(db, outbox, clock)
    assert await first.run_once() is False and outbox.sent == []  # not yet

    clock.set(at(MONDAY, 9, 0) + timedelta(seconds=30))
    assert sorted(await asyncio.gather(first.run_once(), second.run_once())) == [False, True]
    assert outbox.sent == [Period(date(2026, 11, 16), date(2026, 11, 22), MOSCOW)]
    restarted = instance(db, outbox, clock)
    for moment in (at(MONDAY, 9, 5), at(MONDAY + timedelta(days=1), 8, 0), at(MONDAY + timedelta(days=6), 23, 59)):
        clock.set(moment)
        assert not any(await asyncio.gather(first.run_once(), second.run_once(), restarted.run_once()))
    assert len(outbox.sent) == 1

    clock.set(at(MONDAY + timedelta(days=7), 9, 1))
    assert await restarted.run_once() is True and await first.run_once() is False
    assert outbox.sent[-1] == Period(date(2026, 11, 23), date(2026, 11, 29), MOSCOW)


async def test_a_failed_or_abandoned_send_is_made_good_and_a_stale_one_skipped(db: async_sessionmaker[AsyncSession]) -> None:
    outbox, clock = Outbox(), FakeClock(at(MONDAY, 9, 0))
    first, second = instance(db, outbox, clock), instance(db, outbox, clock)
    outbox.fail = True
    assert await first.run_once() is False and outbox.sent == []  # Telegram failed: the week is not marked sent
    clock.set(at(MONDAY, 9, 1))
    assert await second.run_once() is True and len(outbox.sent) == 1

    clock.set(at(MONDAY + timedelta(days=7), 9, 0))
    outbox.hang = True
    dying = asyncio.create_task(first.run_once())  # claims the week, then its process dies mid-send
    await outbox.hanging.wait()
    dying.cancel()
    clock.set(at(MONDAY + timedelta(days=7), 9, 5))
    assert await second.run_once() is False  # its lease still holds
    clock.set(at(MONDAY + timedelta(days=7), 9, 11))
    assert await second.run_once() is True and len(outbox.sent) == 2

    clock.set(at(MONDAY + timedelta(days=15), 10, 0))  # every instance was down from Monday to Tuesday 10:00
    assert await second.run_once() is False and len(outbox.sent) == 2


@pytest.fixture
def report_settings() -> dict[str, Any]:
    return {}


@pytest.fixture
async def app(sandbox: TelegramSandbox, database_url: str, tmp_path: Path, renderer: CatalogRenderer,
              report_settings: dict[str, Any]) -> AsyncIterator[App]:
    settings = analytics_settings(sandbox, database_url, tmp_path, **{"REPORT_SCHEDULE": "mon 09:00", **report_settings})
    service = App(settings, renderer=renderer)
    service.workers = [w for w in service.workers if w not in service.analytics.workers]  # the tests say when it is time
    async with service.running():
        await seed_history(service.db)
        yield service


async def test_the_digest_reaches_the_admins_once(app: App, sandbox: TelegramSandbox) -> None:
    sandbox.send_text(OLGA, "/report 1")  # the admin has talked to the bot (Telegram lets it write to her)
    await sandbox.wait_for_messages(OLGA, 5, timeout=60)
    monday = datetime.now(MOSCOW).date() - timedelta(days=datetime.now(MOSCOW).weekday())
    app.analytics.digest.clock = FakeClock(at(monday, 9, 0) + timedelta(seconds=20))
    assert await app.analytics.digest.run_once() is True
    *charts, summary = (await sandbox.wait_for_messages(OLGA, 10, timeout=60))[5:]
    assert len(charts) == 4 and all("photo" in chart for chart in charts)
    text = summary["text"].replace("\xa0", " ")
    assert text.startswith(f"🗓 Итоги недели · {monday - timedelta(days=7):%d.%m.%Y}–{monday - timedelta(days=1):%d.%m.%Y}")
    assert await app.analytics.digest.run_once() is False  # the week is done, for this instance and any other
    assert len(sandbox.messages(OLGA, from_bot=True)) == 10


@pytest.mark.parametrize("report_settings", [{"REPORT_CHAT_ID": -1009999999999}])
async def test_a_chat_that_refuses_the_digest_is_not_retried(app: App) -> None:
    with capture_logs() as logs:
        await app.analytics.send_digest(Period(date(2026, 11, 16), date(2026, 11, 22), MOSCOW))  # no error: sending again would not help
    [refused] = [entry for entry in logs if entry["event"] == "analytics.digest_refused"]
    assert refused["chat_id"] == -1009999999999 and "chat not found" in refused["error"]


@pytest.mark.parametrize("report_settings", [{"REPORT_CHAT_ID": OPERATORS}])
async def test_the_digest_goes_to_the_report_chat_when_one_is_set(app: App, sandbox: TelegramSandbox) -> None:
    week = Period(date(2026, 11, 16), date(2026, 11, 22), MOSCOW)
    await app.analytics.send_digest(week)
    [summary] = await sandbox.wait_for_messages(OPERATORS, 1, timeout=60, predicate=lambda m: m.get("text", "").startswith("🗓"))
    assert "16.11.2026–22.11.2026" in summary["text"] and sandbox.messages(OLGA, from_bot=True) == []


def test_no_digest_without_a_chat_to_send_it_to() -> None:
    quiz = load_quiz(DEFAULT_QUIZ)
    nowhere = Analytics(load_settings(_env_file=None, REPORT_SCHEDULE="mon 09:00"), None, quiz)  # type: ignore[arg-type]
    assert nowhere.digest is None and nowhere.workers == []
    admins = Analytics(load_settings(_env_file=None, REPORT_SCHEDULE="mon 09:00", ADMIN_IDS="42"), None, quiz)  # type: ignore[arg-type]
    assert admins.digest is not None and len(admins.workers) == 1
