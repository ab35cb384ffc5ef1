"""Reminders a manager sets in the lead's topic (``/remind <when> <what>``): the buyer is reminded at that time, once,
across a restart of the service; the topic is told; a time the bot cannot read gets a one-line answer saying how."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bot.app import App
from bot.catalog.render import CatalogRenderer
from bot.cli import execute, build_parser
from bot.config import Settings
from bot.db.models import Lead
from bot.db.session import database
from bot.followups import store
from bot.followups.models import FollowUp
from bot.followups.reminders import BadWhen, parse_when
from bot.followups.service import FollowUps
from bot.followups.upcoming import UpcomingCb
from bot.sandbox.telegram import TelegramSandbox
from tests.buyer import Buyer, buttons
from tests.conftest import all_handled, command_line
from tests.followups_support import MOSCOW, NOON, bot_texts, clock, followups, settled, started  # noqa: F401  (clock: a fixture)
from tests.relay_support import IVAN, OLGA, OPERATORS, FakeClock, Team, eventually, open_topic, running, settings, team  # noqa: F401


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return execute(args.func, args)


@pytest.fixture
def buyer(sandbox: TelegramSandbox) -> Buyer:
    return started(sandbox, 1001, "Анна", "Петрова")


@asynccontextmanager
async def on_clock(settings: Settings, renderer: CatalogRenderer, clock: FakeClock) -> AsyncIterator[App]:
    """The service, its follow-ups on ``clock``."""
    async with running(settings, renderer) as app:
        app.followups.clock = clock
        yield app


async def test_a_reminder_fires_once_across_a_restart(sandbox: TelegramSandbox, settings: Settings, renderer: CatalogRenderer,
                                                      clock: FakeClock, buyer: Buyer, team: Team) -> None:
    async with on_clock(settings, renderer, clock) as app:
        opened = await open_topic(app, buyer, team)
        team.say(IVAN, opened.thread, "/remind завтра 10:00 Оплатить счёт №17 <до пятницы>")
        answer = (await team.wait(opened.thread, 3))[-1]
        assert answer["text"] == "✅ Напомню покупателю 02.12.2026 10:00: «Оплатить счёт №17 <до пятницы>». Если это ночь для покупателя — утром."
        team.say(IVAN, opened.thread, "/remind когда-нибудь позвонить")
        assert (await team.wait(opened.thread, 4))[-1]["text"].startswith("❌ Не понял, когда напомнить. Пишите так: /remind 25.12 10:00")
        team.say(IVAN, opened.thread, "/remind 01.12.2026 11:00 вчерашнее")
        assert (await team.wait(opened.thread, 5))[-1]["text"].startswith("❌ Это время уже прошло")
        assert len(bot_texts(sandbox, buyer.id)) == 1  # only «thanks» for the question: the commands never reach the buyer
        lead_id = opened.lead_id

    clock.set(datetime(2026, 12, 2, 10, 0, 5, tzinfo=MOSCOW))
    async with on_clock(settings, renderer, clock) as app:  # the service restarted; the reminder is in the database
        app.followups.wake.set()
        reminder = await buyer.reply()
        assert reminder["text"] == "🔔 Напоминание: Оплатить счёт №17 <до пятницы>"
        await eventually(lambda: settled(app, lead_id))
        assert await app.followups.tick() is False
        await eventually(lambda: any(t.startswith("🤖 Бот → покупателю (напоминание менеджера):") for t in bot_texts(sandbox, OPERATORS)))
        rows = await followups(app, lead_id)
    assert [(r.kind, r.state, r.data["manager"]) for r in rows] == [("reminder", "done", "Иван Смирнов")]
    assert len([t for t in bot_texts(sandbox, buyer.id) if t.startswith("🔔")]) == 1


async def test_two_instances_never_remind_a_buyer_or_ask_the_survey_twice(sandbox: TelegramSandbox, settings: Settings,
                                                                          renderer: CatalogRenderer, clock: FakeClock) -> None:
    """Reminders and surveys fall due at one moment and two instances' follow-up rounds (each its own engine) run at
    once: every buyer gets each once."""
    buyers = [started(sandbox, 1100 + index, f"Покупатель{index}") for index in range(6)]
    due = clock() + timedelta(hours=1)
    async with on_clock(settings, renderer, clock) as app, database(settings.database_url) as other_db:
        other = FollowUps(settings, other_db, app.journal, app.messenger, catalog=app.catalog, clock=clock)  # a second instance's
        async with app.db.begin() as session:
            for buyer in buyers:
                lead = Lead(tg_user_id=buyer.id, first_name=buyer.first_name, language="ru")
                session.add(lead)
                await session.flush()
                await store.schedule(session, lead_id=lead.id, kind="reminder", key=f"reminder:{lead.id}", due_at=due, now=clock(),
                                     data={"text": "Оплатить счёт", "manager": "Иван Смирнов"})
                await store.schedule(session, lead_id=lead.id, kind="survey", key=f"survey:L{lead.id}", due_at=due, now=clock(),
                                     stage="test_batch_received")
        clock.set(due + timedelta(seconds=1))
        await asyncio.gather(other.tick(), app.followups.tick(), other.tick(), app.followups.tick())
        for buyer in buyers:
            await eventually(lambda: len(bot_texts(sandbox, buyer.id)) >= 2)
        async with app.db() as session:
            states = (await session.scalars(select(FollowUp.state))).all()
    assert states == ["done"] * 2 * len(buyers)
    for buyer in buyers:
        texts = bot_texts(sandbox, buyer.id)
        assert len(texts) == 2 and texts.count("🔔 Напоминание: Оплатить счёт") == 1, texts


async def test_the_lead_card_leads_the_manager_through_a_reminder(sandbox: TelegramSandbox, settings: Settings,
                                                                  renderer: CatalogRenderer, clock: FakeClock, buyer: Buyer,
                                                                  team: Team) -> None:
    async with on_clock(settings, renderer, clock) as app:
        opened = await open_topic(app, buyer, team)
        assert buttons(opened.card)[-1][0] == "⏰ Напомнить клиенту…"
        sandbox.click(IVAN, opened.card, buttons(opened.card)[-1][1])
        picker = (await team.wait(opened.thread, 3))[-1]
        assert picker["text"].startswith("⏰ Что напомнить покупателю? Выберите ниже.\nСвоё время и текст — командой в этом топике: /remind 25.12 10:00")
        assert [text for text, _ in buttons(picker)] == ["Оплатить счёт", "Прислать паспортные данные для доставки", "Прислать документы"]
        sandbox.click(IVAN, picker, buttons(picker)[1][1])
        await eventually(lambda: team.bot_messages(opened.thread)[-1]["text"].startswith("⏰ «Прислать паспортные данные для доставки» — когда напомнить? (Время — Europe/Moscow"))
        picker = team.bot_messages(opened.thread)[-1]
        assert [text for text, _ in buttons(picker)] == ["через 2 часа", "завтра в 10:00", "через 3 дня", "через неделю", "⬅️ Назад"]
        tomorrow = buttons(picker)[1][1]
        sandbox.click(IVAN, picker, tomorrow)
        await eventually(lambda: team.bot_messages(opened.thread)[-1]["text"].startswith("✅ Напомню покупателю 02.12.2026 10:00"))
        assert not buttons(team.bot_messages(opened.thread)[-1])
        rows = await followups(app, opened.lead_id)
        assert [(r.kind, r.state, r.due_at, r.data["text"], r.data["manager"]) for r in rows] == [
            ("reminder", "pending", datetime(2026, 12, 2, 10, 0, tzinfo=MOSCOW), "Прислать паспортные данные для доставки", "Иван Смирнов")]

        clock.set(datetime(2026, 12, 2, 10, 0, 5, tzinfo=MOSCOW))
        app.followups.wake.set()
        assert (await buyer.reply())["text"] == "🔔 Напоминание: Прислать паспортные данные для доставки"


async def test_a_reminder_at_night_for_the_buyer_waits_until_their_morning(sandbox: TelegramSandbox, settings: Settings,
                                                                           renderer: CatalogRenderer, clock: FakeClock, buyer: Buyer,
                                                                           team: Team) -> None:
    """23:30 in Kazan (the buyer's city, Moscow time) is in the quiet hours (21:00–09:00): held until 09:00, then sent."""
    async with on_clock(settings, renderer, clock) as app:
        opened = await open_topic(app, buyer, team)
        team.say(IVAN, opened.thread, "/remind 23:30 Оплатить счёт №17")
        assert (await team.wait(opened.thread, 3))[-1]["text"].startswith("✅ Напомню покупателю 01.12.2026 23:30")

        clock.set(datetime(2026, 12, 1, 23, 30, 5, tzinfo=MOSCOW))
        app.followups.wake.set()

        async def held() -> bool:
            return [(r.state, r.reason) for r in await followups(app, opened.lead_id)] == [("pending", "quiet hours")]

        await eventually(held)
        assert (await followups(app, opened.lead_id))[0].due_at == datetime(2026, 12, 2, 9, 0, tzinfo=MOSCOW)
        assert await app.followups.tick() is False  # still night for the buyer: nothing is due
        assert not [t for t in bot_texts(sandbox, buyer.id) if t.startswith("🔔")]

        clock.set(datetime(2026, 12, 2, 9, 0, 5, tzinfo=MOSCOW))
        app.followups.wake.set()
        assert (await buyer.reply())["text"] == "🔔 Напоминание: Оплатить счёт №17"


@pytest.mark.parametrize("args, expected", [
    ("+30m позвонить", (datetime(2026, 12, 1, 12, 30), "позвонить")),
    ("+3d паспорт", (datetime(2026, 12, 4, 12, 0), "паспорт")),
    ("15:00 оплата", (datetime(2026, 12, 1, 15, 0), "оплата")),
    ("09:00 оплата", (datetime(2026, 12, 2, 9, 0), "оплата")),  # passed today: tomorrow
    ("tomorrow 10:00 pay", (datetime(2026, 12, 2, 10, 0), "pay")),
    ("25.12 10:00 счёт №5", (datetime(2026, 12, 25, 10, 0), "счёт №5")),
    ("05.01 10:00 после праздников", (datetime(2027, 1, 5, 10, 0), "после праздников")),  # January: the next one
    ("05.01.2027 10:00 x", (datetime(2027, 1, 5, 10, 0), "x")),
])
def test_when_a_reminder_is_due(args: str, expected: tuple[datetime, str]) -> None:
    moment, what = parse_when(args, NOON, MOSCOW)
    assert (moment.astimezone(MOSCOW).replace(tzinfo=None), what) == expected


@pytest.mark.parametrize("args", ["", "позвонить", "+30m", "31.02 10:00 x", "25:00 x", "01.12.2026 11:00 x", "+999d x", "10:00"])
def test_unreadable_or_past_times_are_refused(args: str) -> None:
    with pytest.raises(BadWhen):
        parse_when(args, NOON, ZoneInfo("Europe/Moscow"))


def test_the_delay_counts_from_now() -> None:
    assert parse_when("+2h x", NOON, MOSCOW)[0] == NOON + timedelta(hours=2)


async def test_admins_see_whats_coming_and_cancel_one(sandbox: TelegramSandbox, settings: Settings, renderer: CatalogRenderer,
                                                      clock: FakeClock, buyer: Buyer, team: Team) -> None:
    async with on_clock(settings, renderer, clock) as app:
        opened = await open_topic(app, buyer, team)
        team.say(IVAN, opened.thread, "/remind +2h Прислать <паспорт>")
        team.say(IVAN, opened.thread, "/remind +1d Оплатить счёт")
        await team.wait(opened.thread, 4)

        sandbox.send_text(OLGA, "/upcoming")  # an admin, in a private chat with the bot
        listing = (await sandbox.wait_for_messages(OLGA, 1))[0]
        assert listing["text"].splitlines() == [
            "Запланировано (2), ближайшие первыми:",
            "#1 · 01.12 14:00 · Анна Петрова · напоминание менеджера: Прислать <паспорт>",
            "#2 · 02.12 12:00 · Анна Петрова · напоминание менеджера: Оплатить счёт",
        ]
        sandbox.click(OLGA, listing, buttons(listing)[0][1])
        await eventually(lambda: sandbox.messages(OLGA, from_bot=True)[0]["text"].count("#") == 1)  # the list without it

        clock.set(NOON + timedelta(days=2))
        app.followups.wake.set()
        assert (await buyer.reply())["text"] == "🔔 Напоминание: Оплатить счёт"
        await eventually(lambda: settled(app, opened.lead_id))
        rows = await followups(app, opened.lead_id)
    assert [(r.id, r.state) for r in rows] == [(1, "cancelled"), (2, "done")]
    assert rows[0].reason == "cancelled by Ольга Кузнецова"
    assert [t for t in bot_texts(sandbox, buyer.id) if t.startswith("🔔")] == ["🔔 Напоминание: Оплатить счёт"]


def test_the_command_line_lists_and_cancels(sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    async def seed() -> None:
        async with database(sqlite_url) as db, db.begin() as session:
            lead = Lead(tg_user_id=100, first_name="Анна")
            session.add(lead)
            await session.flush()
            await store.schedule(session, lead_id=lead.id, kind="reminder", key="reminder:1:1", due_at=NOON, now=NOON,
                                 data={"text": "Оплатить счёт"})

    asyncio.run(seed())
    command_line(monkeypatch, sqlite_url, tmp_path)
    assert main(["followups", "list"]) == 0
    assert capsys.readouterr().out == "#1 · 01.12 12:00 · Анна · напоминание менеджера: Оплатить счёт\n"
    assert main(["followups", "cancel", "1"]) == 0 and capsys.readouterr().out == "cancelled #1\n"
    assert main(["followups", "cancel", "1"]) == 1
    assert "#1 is not scheduled (sent, cancelled or unknown)" in capsys.readouterr().err
    assert main(["followups", "list"]) == 0 and capsys.readouterr().out == "nothing is scheduled\n"


async def test_only_admins_see_whats_coming_or_cancel_it(sandbox: TelegramSandbox, settings: Settings, renderer: CatalogRenderer,
                                                        clock: FakeClock, buyer: Buyer, team: Team) -> None:
    """A manager who is no admin gets no list from ``/upcoming`` (privately or in the operator chat), and pressing «✖ #1»
    under the list an admin asked for in the operator chat cancels nothing; the admin's own press does."""
    async with on_clock(settings, renderer, clock) as app:
        opened = await open_topic(app, buyer, team)
        team.say(IVAN, opened.thread, "/remind +2h Прислать паспорт")
        await team.wait(opened.thread, 3)

        sandbox.send_text(IVAN, "/upcoming")  # privately: the journey takes him for a buyer
        team.say(IVAN, None, "/upcoming")
        team.say(IVAN, opened.thread, "/upcoming")
        await all_handled(app, sandbox)
        said = [m.get("text", "") for m in [*sandbox.messages(IVAN, from_bot=True), *sandbox.messages(OPERATORS, from_bot=True)]]
        assert said and not any("Запланировано" in text or "#1" in text for text in said), said

        team.say(OLGA, None, "/upcoming")  # the admin, in the operator chat: every manager there sees the list
        [listing] = await sandbox.wait_for_messages(OPERATORS, 1, predicate=lambda m: m.get("text", "").startswith("Запланировано"))
        now_reads = lambda message: next(m for m in sandbox.messages(OPERATORS) if m["message_id"] == message["message_id"])["text"]  # noqa: E731
        cancel = UpcomingCb(followup=1).pack()
        assert buttons(listing) == [("✖ #1", cancel)]
        pressed = sandbox.click(IVAN, listing, cancel)
        await all_handled(app, sandbox)
        assert [r.state for r in await followups(app, opened.lead_id)] == ["pending"]
        [answer] = [a for a in sandbox.callback_answers if a["callback_query_id"] == pressed["id"]]  # the button is not his: said so
        assert answer["show_alert"] and answer["text"] == "Эта кнопка не для вас или больше не действует."
        assert now_reads(listing) == listing["text"]

        sandbox.click(OLGA, listing, cancel)
        await eventually(lambda: "#1" not in now_reads(listing))
        assert [r.state for r in await followups(app, opened.lead_id)] == ["cancelled"]
