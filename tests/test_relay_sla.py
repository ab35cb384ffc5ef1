"""The answer SLA: working hours, a ping (and an amoCRM task event) at the right time, the escalation, response times, /stats."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bot.app import App
from bot.config import ConfigError, load_settings
from bot.db.base import utcnow
from bot.hours import WorkingHours
from bot.journal import SLA_BREACHED
from bot.relay.models import RelayTopic, RelayWait
from bot.sandbox.telegram import TelegramSandbox
from tests import relay_support
from tests.buyer import Buyer
from tests.relay_support import (
    IVAN,
    OPERATORS,
    FakeClock,
    Team,
    events,
    eventually,
    known_lead,
    open_topic,
)

settings = relay_support.settings  # the app gets the operator chat
team = relay_support.team  # managers acting in topics

MOSCOW = ZoneInfo("Europe/Moscow")


def msk(*args: int) -> datetime:
    return datetime(*args, tzinfo=MOSCOW)


def test_working_hours_skip_nights_and_weekends() -> None:
    hours = WorkingHours.parse("09:00-19:00", "1-5", "Europe/Moscow")
    assert hours.add(msk(2026, 11, 26, 12, 0), 5) == msk(2026, 11, 26, 12, 5)  # Thursday, working
    assert hours.add(msk(2026, 11, 27, 18, 58), 5) == msk(2026, 11, 30, 9, 3)  # Friday evening → Monday
    assert hours.add(msk(2026, 11, 28, 11, 0), 5) == msk(2026, 11, 30, 9, 5)  # Saturday → Monday
    assert hours.add(msk(2026, 11, 26, 7, 30), 15) == msk(2026, 11, 26, 9, 15)  # before the day starts
    assert hours.between(msk(2026, 11, 27, 18, 58), msk(2026, 11, 30, 9, 3)) == 300
    assert hours.between(msk(2026, 11, 26, 20, 0), msk(2026, 11, 26, 23, 0)) == 0
    always = WorkingHours.parse("00:00-24:00", "1-7", "UTC")
    start = datetime(2026, 11, 28, 23, 58, tzinfo=UTC)
    assert always.add(start, 5) == start + timedelta(minutes=5)


def test_working_hours_and_sla_settings_are_checked() -> None:
    for wrong in ({"WORKING_HOURS": "19:00-09:00"}, {"WORKING_DAYS": "mon-fri"}, {"SLA_MINUTES": 20, "SLA_ESCALATE_MINUTES": 15}):
        with pytest.raises(ConfigError):
            load_settings(_env_file=None, **wrong)


async def test_ping_then_escalation_at_the_right_time(app: App, sandbox: TelegramSandbox, buyer: Buyer, team: Team) -> None:
    thread = (await open_topic(app, buyer, team)).thread
    async with app.db() as session:
        wait = (await session.execute(select(RelayWait))).scalar_one()
    clock = FakeClock(wait.started_at + timedelta(minutes=4, seconds=59))
    app.relay.sla.clock = clock
    assert await app.relay.check_sla() == 0
    assert await events(app, SLA_BREACHED) == []

    clock.set(wait.started_at + timedelta(minutes=5, seconds=1))
    await asyncio.gather(app.relay.check_sla(), app.relay.check_sla())  # two instances (and the worker) race for it
    [ping] = await sandbox.wait_for_messages(OPERATORS, 1, thread_id=thread, predicate=lambda m: m["text"].startswith("⏰"))
    assert ping["text"] == "⏰ Иван Смирнов, покупатель ждёт ответа уже 5 мин."
    assert [e["url"] for e in ping["entities"] if e["type"] == "text_link"] == [f"tg://user?id={IVAN}"]
    [breach] = await events(app, SLA_BREACHED)
    assert breach.data == {"level": 1, "minutes": 5, "manager": "Иван Смирнов", "responsible_user_id": 9001}
    assert await app.relay.check_sla() == 0

    clock.set(wait.started_at + timedelta(minutes=15, seconds=1))
    await app.relay.check_sla()
    [escalation] = await sandbox.wait_for_messages(OPERATORS, 1, thread_id=thread, predicate=lambda m: m["text"].startswith("🚨"))
    assert escalation["text"] == "🚨 Ольга Кузнецова: покупатель ждёт ответа 15 мин. Ответственный: Иван Смирнов."
    assert [e.data["level"] for e in await events(app, SLA_BREACHED)] == [1, 2]
    assert (await events(app, SLA_BREACHED))[1].data["responsible_user_id"] == 9002  # the head of sales gets the task

    clock.set(wait.started_at + timedelta(minutes=16))
    team.say(IVAN, thread, "Извините за ожидание!")
    await buyer.reply()

    async def answered() -> bool:
        async with app.db() as session:
            return (await session.get(RelayWait, wait.id)).closed_at is not None

    await eventually(answered)
    async with app.db() as session:
        done = await session.get(RelayWait, wait.id)
    assert (done.answered_by, done.answered_by_name, done.response_seconds) == (IVAN, "Иван Смирнов", 960)

    team.say(IVAN, thread, "/stats")
    stats = (await sandbox.wait_for_messages(OPERATORS, 1, predicate=lambda m: m["text"].startswith("📊 Первый")))[0]
    assert stats["text"].splitlines() == [
        "📊 Первый ответ покупателю (рабочее время)",
        "Сегодня: медиана 16 мин, p90 16 мин · 1 ответ",
        "Неделя: медиана 16 мин, p90 16 мин · 1 ответ",
        "", "Менеджеры за неделю:", "• Иван Смирнов: медиана 16 мин, p90 16 мин · 1 ответ",
        "", "Ждут ответа: 0",
    ]


async def test_stats_show_percentiles_and_the_slowest_open_threads(app: App, sandbox: TelegramSandbox, team: Team) -> None:
    now = utcnow()
    app.relay.sla.clock = FakeClock(now)
    leads = [await known_lead(app, Buyer(sandbox, 2000 + i, f"Покупатель{i}"), first_name=f"Покупатель{i}", last_name=None)
             for i in range(12)]
    async with app.db.begin() as session:
        for i, lead in enumerate(leads[:10]):  # answered in 1..10 minutes
            session.add(RelayWait(lead_id=lead.id, started_at=now - timedelta(minutes=30), due_at=now, escalate_at=now,
                                  closed_at=now, answered_by=IVAN, answered_by_name="Иван Смирнов",
                                  response_seconds=60 * (i + 1)))
        for i, lead in enumerate(leads[10:]):  # still waiting: 20 and 40 minutes
            session.add(RelayWait(lead_id=lead.id, started_at=now - timedelta(minutes=20 * (i + 1)), due_at=now, escalate_at=now, level=2))
        session.add(RelayTopic(lead_id=leads[11].id, chat_id=OPERATORS, thread_id=77, card_message_id=78))
    sandbox.send_text(IVAN, "/stats", chat_id=OPERATORS)
    stats = (await sandbox.wait_for_messages(OPERATORS, 1, predicate=lambda m: m["text"].startswith("📊")))[0]
    assert stats["text"].splitlines() == [
        "📊 Первый ответ покупателю (рабочее время)",
        "Сегодня: медиана 5 мин 30 с, p90 9 мин 00 с · 10 ответов",
        "Неделя: медиана 5 мин 30 с, p90 9 мин 00 с · 10 ответов",
        "", "Менеджеры за неделю:", "• Иван Смирнов: медиана 5 мин 30 с, p90 9 мин 00 с · 10 ответов",
        "", "Ждут ответа: 2", "Дольше всех ждут:", "• Покупатель11 — 40 мин", "• Покупатель10 — 20 мин",
    ]
    [link] = [e for e in stats["entities"] if e["type"] == "text_link"]
    assert link["url"] == "https://t.me/c/1234567890/77" and link["length"] == len("Покупатель11")
