"""A known history, made through the real paths, and every figure of its report.

Buyers arrive by the website quiz (Marquiz webhook + personal link), an ad link, a phone match and a
cold /start; they get greetings and catalogues, one asks for a test batch; managers answer in the
operator chat after known delays and a question stays unanswered past the SLA; a broadcast goes out
and gets replies, an opt-out, a blocked buyer and conversions; deals move in amoCRM (its webhooks) to
the key stage and further, one is lost, one gets its budget; ad spend comes from a CSV file. Then the
days that the real paths stamped "now" are set to known ones, and the report of the last 7 days is
checked figure by figure, on SQLite and on PostgreSQL.
"""
from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from bot.analytics import cli as analytics_cli
from bot.analytics.period import Period, monday_of
from bot.analytics.queries import Counts, Filters, Quantiles, dimensions
from bot.analytics.report import Report, build, week_start
from bot.app import App
from bot.db.models import Lead
from bot.relay.models import RelayTopic, RelayWait
from bot.sandbox.amocrm import AmoSandbox
from bot.sandbox.telegram import TelegramSandbox
from tests import relay_support
from tests.analytics_support import MOSCOW, TODAY, amocrm, app, crm_id, day, lead_of, marquiz, moment, move, open_wait, set_lead  # noqa: F401
from tests.broadcast_support import create, until_done
from tests.buyer import Buyer
from tests.crm_support import eventually
from tests.relay_support import IVAN, OLGA, FakeClock, Team

team = relay_support.team
PERIOD = Period(TODAY - timedelta(days=6), TODAY, MOSCOW)


async def answer_after(app: App, team: Team, buyer: Buyer, manager: int, seconds: int) -> None:
    """``manager`` answers the buyer's open question in its topic, exactly ``seconds`` after it was asked."""
    lead = await lead_of(app, buyer.id)
    wait = await open_wait(app, lead.id)

    async def topic() -> bool:
        async with app.db() as session:
            row = await session.get(RelayTopic, lead.id)
            return row is not None and row.thread_id is not None
    await eventually(topic)
    async with app.db() as session:
        thread = (await session.get(RelayTopic, lead.id)).thread_id
    app.relay.sla.clock = FakeClock(wait.started_at + timedelta(seconds=seconds))
    team.say(manager, thread, "Да, конечно")

    async def answered() -> bool:
        async with app.db() as session:
            return (await session.get(RelayWait, wait.id)).closed_at is not None
    await eventually(answered)


async def test_every_figure_of_a_known_history(app: App, sandbox: TelegramSandbox, amocrm: AmoSandbox, team: Team, tmp_path: Path) -> None:
    # ---- arrivals -------------------------------------------------------------------------------
    anna_id, anna_link = await marquiz(app, "Анна Петрова", "79990000001", {"source": "yandex", "medium": "cpc", "name": "shoes"})
    boris_id, _ = await marquiz(app, "Борис", "79990000002", {"source": "vk", "medium": "cpm", "name": "spring"})  # never opens the bot
    await marquiz(app, "Дина", "79990000005")  # found later by the phone shared in the bot

    anna = Buyer(sandbox, 1001, "Анна")
    anna.send(f"/start {anna_link}")
    await anna.reply()
    anna.click("каталог")
    await anna.replies(3, timeout=30)  # the PDF, the price list, the test-batch offer
    anna.click("тестовую партию")
    await anna.reply()
    anna.send("Кроссовки, 36–41")
    assert "Казань" in (await anna.reply())["text"]  # the request is recorded: city and phone came with the quiz

    vera = Buyer(sandbox, 1003, "Вера")
    vera.send("/start vk__cpm__spring")
    await vera.replies(2)
    for option in ("Обувь", "Готово", "100–300 тыс ₽", "Маркетплейсы"):
        vera.click(option)
        if option != "Обувь":
            await vera.reply()
    vera.send("Самара")
    await vera.reply()
    vera.click("каталог")
    await vera.replies(3, timeout=30)

    gleb = Buyer(sandbox, 1004, "Глеб")
    gleb.send("/start")
    await gleb.replies(2)

    dina = Buyer(sandbox, 1005, "Дина")
    dina.send("/start")
    await dina.replies(2)
    dina.share_phone("+79990000005")
    await dina.replies(2)  # the website quiz is found by the phone: the greeting by interests

    egor = Buyer(sandbox, 1006, "Егор")  # arrives in the previous period
    egor.send("/start")
    await egor.replies(2)

    # ---- a broadcast: one buyer blocked the bot, one opts out, one replies, two deals convert -------
    sandbox.block(dina.id)
    broadcast_id = await create(app, "Новинки")
    await until_done(app, broadcast_id)
    for buyer in (anna, vera, gleb, egor):
        await buyer.reply()  # the broadcast
    egor.send("/stop")
    await egor.reply()

    # ---- managers: Olga answers Vera in 30 s, Ivan answers her next question in 2 min, her third waits past the SLA
    vera.send("Есть размеры 42–46?")
    await vera.reply()
    await answer_after(app, team, vera, OLGA, 30)
    vera.send("Есть скидки от объёма?")
    await vera.replies(2)  # Olga's answer, then «thanks» for the new question
    await answer_after(app, team, vera, IVAN, 120)
    vera.send("А доставка в Самару?")
    await vera.replies(2)
    waiting = await open_wait(app, (await lead_of(app, vera.id)).id)
    app.relay.sla.clock = FakeClock(waiting.started_at + timedelta(minutes=5, seconds=1))
    await app.relay.check_sla()

    # ---- amoCRM: Anna's deal to «Основная партия отправлена» with a budget, Vera's to the key stage, then lost
    vera_id = (await lead_of(app, vera.id)).id
    for stage in ("test_batch_sent", "test_batch_received", "main_batch_agreed", "main_batch_sent"):
        await move(app, amocrm, anna_id, stage)
    assert await amocrm.set_price(await crm_id(app, anna_id), 150_000) == [200]
    await move(app, amocrm, vera_id, "test_batch_sent")
    await move(app, amocrm, vera_id, "lost")
    gleb_id, dina_id, egor_id = [(await lead_of(app, buyer.id)).id for buyer in (gleb, dina, egor)]
    for lead_id in (boris_id, gleb_id, dina_id, egor_id):
        await crm_id(app, lead_id)
    await app.crm.worker.drain()
    covered = {task["entity_id"] for task in amocrm.account.find_tasks(is_completed=False)}
    async with app.db() as session:
        deals = (await session.execute(select(Lead.id, Lead.crm_lead_id).where(
            Lead.merged_into_id.is_(None), Lead.crm_lead_id.is_not(None), Lead.stage.not_in(("lost", "won"))))).all()
    without_task = {lead_id for lead_id, deal in deals if deal not in covered}
    await app.crm.checks.ensure_tasks()  # the «no deal without a task» check

    # ---- ad spend from a file --------------------------------------------------------------------
    csv = tmp_path / "spend.csv"
    csv.write_text("date;source;campaign;amount\n"
                   f"{day(6):%d.%m.%Y};yandex;shoes;3 000\n{day(3):%d.%m.%Y};vk;spring;1200,00\n{day(3):%d.%m.%Y};vk;;300\n"
                   f"{day(10):%d.%m.%Y};yandex;shoes;999\n", encoding="utf-8")
    assert await analytics_cli.import_spend(app.settings, argparse.Namespace(file=csv)) == 0

    # ---- the days (the real paths stamped everything "now"), and what the bot measured -------------
    async with app.db() as session:
        measured = dict((await session.execute(select(Lead.id, Lead.first_reply_ms).where(Lead.merged_into_id.is_(None)))).all())
    assert measured[boris_id] is None and all(0 < measured[i] < 10_000 for i in (anna_id, vera_id, gleb_id, dina_id, egor_id))
    await set_lead(app, anna_id, created_at=moment(6, 10), key_stage_at=moment(4, 10), first_reply_ms=40)
    await set_lead(app, boris_id, created_at=moment(6, 12))
    await set_lead(app, vera_id, created_at=moment(3, 15), key_stage_at=moment(2, 15), first_reply_ms=60)
    await set_lead(app, gleb_id, created_at=moment(1, 9), first_reply_ms=200)
    await set_lead(app, dina_id, created_at=moment(0, 0, 30), first_reply_ms=100)
    await set_lead(app, egor_id, created_at=moment(9, 18), first_reply_ms=50)

    report = await build(app.db, app.quiz, PERIOD, by=dimensions(app.quiz), crm=True)
    await check(report, broadcast_id=broadcast_id, without_task=without_task)
    for filters, arrived, key, spend in ((Filters(source="vk"), 2, 1, 150_000), (Filters(campaign="shoes"), 1, 1, 300_000),
                                         (Filters(answers=(("category", "shoes"),)), 4, 2, None), (Filters(path="phone"), 1, 0, None),
                                         (Filters(managers=()), 0, 0, None)):
        narrow = await build(app.db, app.quiz, PERIOD, filters, crm=True)
        assert (narrow.total.arrived, narrow.total.key, narrow.spend) == (arrived, key, spend), filters
    async with app.db() as session:
        marked = set((await session.execute(select(Lead.id).where(Lead.no_task_since.is_not(None)))).scalars())
    assert marked == without_task


def steps(counts: Counts) -> list[int]:
    return list(counts.steps.values())


async def check(report: Report, *, broadcast_id: int, without_task: set[int]) -> None:
    # Funnel: arrived, quiz, greeted, catalogue, test request, key stage, received, approved, agreed, sent, repeat
    assert steps(report.total) == [5, 4, 4, 2, 1, 2, 1, 1, 1, 1, 0]
    assert (report.total.lost, report.total.revenue) == (1, 15_000_000)
    assert steps(report.previous) == [1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert report.time_to_key == Quantiles(n=2, p50=86400, p90=2 * 86400, p95=2 * 86400, max=2 * 86400)

    def by(dimension: str) -> dict[str, tuple[int, int, int | None]]:
        return {row.key: (row.counts.arrived, row.counts.key, row.spend) for row in report.breakdowns[dimension]}

    assert by("path") == {"quiz": (2, 1, None), "ad": (1, 1, None), "cold": (1, 0, None), "phone": (1, 0, None)}
    assert by("source") == {"vk": (2, 1, 150_000), "yandex": (1, 1, 300_000), "marquiz": (1, 0, 0), "": (1, 0, 0)}
    assert by("medium") == {"cpm": (2, 1, None), "cpc": (1, 1, None), "": (2, 0, None)}
    assert by("campaign") == {"spring": (2, 1, 120_000), "shoes": (1, 1, 300_000), "": (2, 0, 0)}
    assert by("category") == {"shoes": (4, 2, None), "": (1, 0, None)}  # Gleb took no quiz
    assert by("language") == {"ru": (5, 2, None)}
    weeks: dict[str, list[int]] = {}
    for days_ago, key in ((6, 1), (6, 0), (3, 1), (1, 0), (0, 0)):
        week = str((day(days_ago) - monday_of(0)).days // 7)
        weeks.setdefault(week, [0, 0])
        weeks[week][0] += 1
        weeks[week][1] += key
    assert {k: (a, b) for k, (a, b, _) in by("week").items()} == {k: tuple(v) for k, v in weeks.items()}
    assert all(week_start(row.key).weekday() == 0 for row in report.breakdowns["week"])
    by_source = {row.key: row for row in report.breakdowns["source"]}
    assert by_source["yandex"].counts.revenue == 15_000_000 and by_source["vk"].counts.lost == 1
    assert by_source["yandex"].time_to_key == Quantiles(1, 2 * 86400, 2 * 86400, 2 * 86400, 2 * 86400)
    assert by_source["vk"].time_to_key == Quantiles(1, 86400, 86400, 86400, 86400)

    assert [(d, n) for d, n in report.days if n] == [(day(6), {"quiz": 2}), (day(3), {"ad": 1}), (day(1), {"cold": 1}), (day(0), {"phone": 1})]
    assert len(report.days) == 7 and report.days[0][0] == day(6)

    # Speed: the bot's first replies (ms) by path, managers' first answers (s), the SLA, the open question
    assert report.first_replies == {"*": Quantiles(4, 60, 200, 200, 200), "quiz": Quantiles(1, 40, 40, 40, 40),
                                    "ad": Quantiles(1, 60, 60, 60, 60), "cold": Quantiles(1, 200, 200, 200, 200),
                                    "phone": Quantiles(1, 100, 100, 100, 100)}
    olga, ivan, team_times = report.managers  # the fastest first, the team last
    assert (olga.name, olga.all, olga.in_hours, olga.off_hours) == ("Ольга Кузнецова", Quantiles(1, 30, 30, 30, 30), Quantiles(1, 30, 30, 30, 30), None)
    assert (ivan.name, ivan.all) == ("Иван Смирнов", Quantiles(1, 120, 120, 120, 120))
    assert team_times.all == Quantiles(2, 30, 120, 120, 120) and team_times.buckets == [1, 1, 0, 0, 0, 0]
    assert report.breaches == {"Иван Смирнов": (1, 0)}
    assert report.waiting == 1 and report.waiting_since is not None

    # «No deal without a task»: the open deals amoCRM showed without an open task at the check
    assert report.without_task == len(without_task) > 0

    # Money: spend of the period (the day 10 days ago is not in it), costs, revenue
    assert report.spend == 450_000 and report.revenue == 15_000_000

    # The broadcast: 5 recipients, 4 delivered, Dina blocked the bot, Egor opted out, Vera replied,
    # Anna's and Vera's deals reached the key stage within 7 days
    [row] = report.broadcasts
    assert row.info.id == broadcast_id and row.info.name == "Новинки"
    total = row.total
    assert (total.recipients, total.delivered, total.blocked, total.unsubscribed, total.replied, total.converted) == (5, 4, 1, 1, 1, 2)
