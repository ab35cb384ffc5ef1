"""The operator groups within Telegram's limits, over HTTP against the sandbox enforcing them: a burst above a
group's limit reaches every topic in order without a 429 left unhandled, a topic's texts queued while the
group is throttled go as one post, urgent posts go first, queued posts survive a restart, several groups
share the load."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from bot.app import App
from bot.catalog.render import CatalogRenderer
from bot.config import PROJECT_DIR, ConfigError, load_settings
from bot.relay import pacer
from bot.relay.chat import Budgets
from bot.db.session import open_database
from bot.relay.models import RelayPost, RelayTopic
from bot.sandbox.telegram import TelegramSandbox
from tests import relay_support
from tests.buyer import Buyer
from tests.conftest import SECRET, TOKEN
from tests.test_cli import environment
from tests.test_crm_limits import most_in_any_window
from tests.test_inbox_crash import until
from tests.relay_support import (
    IVAN,
    OLGA,
    OPERATORS,
    PETR,
    STRANGER,
    Team,
    eventually,
    known_lead,
    open_topic,
    relay_settings,
    running,
)

settings = relay_support.settings  # the app gets the operator chat
team = relay_support.team  # managers acting in topics

SECOND, ELSEWHERE = -1009876543210, -1005555555555
TIME_MARK = re.compile(r"^\d\d:\d\d (.*)$")


def limit_groups(sandbox: TelegramSandbox, app: App, *, posts: int, window: float, app_posts: int | None = None) -> None:
    """Telegram's group limit shortened to ``posts`` per ``window`` seconds, in the sandbox and the app alike
    (the app's budget may be set above it, ``app_posts``, to draw 429s)."""
    sandbox.rate_limits(enabled=False, group_per_minute=posts, group_window=window)
    budgets = app.relay.chat.budgets
    budgets.period, budgets.per_minute["posts"] = window, app_posts or posts


def buyers(sandbox: TelegramSandbox, count: int, first: int = 2001) -> list[Buyer]:
    return [Buyer(sandbox, user_id=first + index, first_name=f"Покупатель{index}") for index in range(count)]


async def lead_of(app: App, buyer: Buyer, **fields: Any) -> int:
    return (await known_lead(app, buyer, first_name=f"Покупатель{buyer.id}", last_name=None, tg_username=None, **fields)).id


def relayed(sandbox: TelegramSandbox, chat_id: int, thread: int) -> list[str]:
    """The buyer texts in a topic after its card, in order (a coalesced post's lines without their time marks)."""
    lines = []
    for message in sandbox.messages(chat_id, thread_id=thread, from_bot=True)[1:]:
        for line in message.get("text", "").splitlines():
            found = TIME_MARK.match(line)
            lines.append(found[1] if found else line)
    return lines


async def threads(app: App) -> dict[int, RelayTopic]:
    async with app.db() as session:
        return {row.lead_id: row for row in (await session.execute(select(RelayTopic))).scalars()}


async def queue_empty(app: App) -> bool:
    async with app.db() as session:
        return await pacer.count(session) == 0


async def all_relayed(app: App, sandbox: TelegramSandbox, expected: dict[int, list[str]]) -> bool:
    """Every lead's topic holds its buyer's texts (``expected``, by lead), and nothing is queued."""
    found = await threads(app)
    return await queue_empty(app) and all(
        lead in found and found[lead].thread_id and relayed(sandbox, found[lead].chat_id, found[lead].thread_id) == texts
        for lead, texts in expected.items())


def test_the_operator_groups_settings() -> None:
    both = load_settings(_env_file=None, OPERATOR_CHAT_ID=str(OPERATORS), OPERATOR_CHAT_IDS=f"{SECOND}; {OPERATORS}")
    assert both.operator_chats == (OPERATORS, SECOND)  # the single group first, each once
    assert load_settings(_env_file=None, OPERATOR_CHAT_IDS=f"{SECOND},{OPERATORS}").operator_chats == (SECOND, OPERATORS)
    assert load_settings(_env_file=None).operator_chats == ()
    with pytest.raises(ConfigError, match=r"OPERATOR_CHAT_IDS: must be comma-separated Telegram ids, e\.g\. -100"):
        load_settings(_env_file=None, OPERATOR_CHAT_IDS="-1001234567890,операторы")
    with pytest.raises(ConfigError, match="GROUP_POSTS_PER_MINUTE"):
        load_settings(_env_file=None, GROUP_POSTS_PER_MINUTE="0")


async def test_a_burst_above_the_group_limit_reaches_every_topic_in_order(app: App, sandbox: TelegramSandbox) -> None:
    limit_groups(sandbox, app, posts=4, window=2)
    people = buyers(sandbox, 4)
    expected = {}
    for person in people:
        expected[await lead_of(app, person)] = [f"{person.id}: вопрос {number}" for number in range(5)]
    for number in range(5):  # 20 messages and 4 new topics with their cards at once, against 4 posts per 2 s
        for person in people:
            person.send(f"{person.id}: вопрос {number}")

    await eventually(lambda: all_relayed(app, sandbox, expected), timeout=40)
    assert [t for t in sandbox.throttles if t.scope in ("group", "topics")] == []  # paced: Telegram never refused
    posts = [m for m in sandbox.messages(OPERATORS, from_bot=True)]
    assert len(posts) < 4 + 20  # texts queued while the group was throttled went together


async def test_a_429_from_the_group_is_waited_out_and_nothing_is_lost(app: App, sandbox: TelegramSandbox) -> None:
    limit_groups(sandbox, app, posts=3, window=2, app_posts=6)  # the app believes in twice what Telegram takes
    people = buyers(sandbox, 3)
    expected = {}
    for person in people:
        expected[await lead_of(app, person)] = [f"{person.id}: вопрос {number}" for number in range(3)]
    for number in range(3):
        for person in people:
            person.send(f"{person.id}: вопрос {number}")

    await eventually(lambda: all_relayed(app, sandbox, expected), timeout=40)
    assert [t for t in sandbox.throttles if t.scope == "group"]  # Telegram refused some: each was posted again


async def test_texts_queued_while_the_group_is_throttled_go_as_one_post(app: App, sandbox: TelegramSandbox, buyer: Buyer,
                                                                         team: Team) -> None:
    limit_groups(sandbox, app, posts=2, window=3)
    opened = await open_topic(app, buyer, team)  # the card and the question: the group's budget is spent
    texts = ["А размер 39?", "И 40-й", "<b>Цена</b> за пару?", "Доставка в Казань?"]
    for text in texts:
        buyer.send(text)

    await eventually(lambda: len(team.bot_messages(opened.thread)) == 3, timeout=10)
    batch = team.bot_messages(opened.thread)[2]
    lines = batch["text"].splitlines()
    assert [TIME_MARK.match(line)[1] for line in lines] == texts  # each message on its line, after its time, as typed
    assert [e["type"] for e in batch["entities"] if e["type"] == "italic"] == ["italic"] * 4
    team.say(IVAN, opened.thread, "Есть оба размера", reply_to=batch)
    assert (await buyer.reply())["reply_to_message"]["message_id"] == buyer_message_id(sandbox, buyer, texts[0])

    await eventually(lambda: queue_empty(app))
    buyer.send("Спасибо!")  # the group has room again: a message goes on its own, as it is
    await eventually(lambda: len(team.bot_messages(opened.thread)) == 4, timeout=10)
    assert team.bot_messages(opened.thread)[-1]["text"] == "Спасибо!"


async def test_media_queued_while_throttled_go_in_one_request_albums_kept(app: App, sandbox: TelegramSandbox, buyer: Buyer,
                                                                          team: Team) -> None:
    limit_groups(sandbox, app, posts=8, window=3)
    opened = await open_topic(app, buyer, team)
    async with app.relay.chat.budgets.post(OPERATORS, 6):  # the group's budget spent: what comes meanwhile waits
        sent = [sandbox.send_media(buyer.id, "photo"), sandbox.send_media(buyer.id, "document", caption="Прайс")]
        sent += sandbox.send_album(buyer.id, [{"kind": "photo", "caption": "Цвета"}, "photo", "photo"])

        async def all_queued() -> bool:
            async with app.db() as session:
                return await pacer.count(session) == 5

        await eventually(all_queued)

    copies = (await team.wait(opened.thread, 7, timeout=15))[2:]
    calls = [c for c in sandbox.calls if c.method in ("copyMessage", "copyMessages") and c.chat_id == OPERATORS and c.ok]
    assert [c.method for c in calls][-1:] == ["copyMessages"] and len(calls[-1].result) == 5  # one request for the five
    assert [copy.get("caption") for copy in copies] == [None, "Прайс", "Цвета", None, None]
    assert len({copy.get("media_group_id") for copy in copies[2:]}) == 1 and "media_group_id" not in copies[0]


def buyer_message_id(sandbox: TelegramSandbox, buyer: Buyer, text: str) -> int:
    return next(m["message_id"] for m in sandbox.messages(buyer.id, from_bot=False) if m.get("text") == text)


async def test_a_new_lead_goes_before_routine_posts(app: App, sandbox: TelegramSandbox, buyer: Buyer, team: Team) -> None:
    limit_groups(sandbox, app, posts=2, window=3)
    waiting = await open_topic(app, buyer, team)
    sandbox.send_media(buyer.id, "photo")  # a follow-up while the buyer waits: routine
    newcomer = Buyer(sandbox, user_id=2101, first_name="Новый")
    await lead_of(app, newcomer)
    newcomer.send("Здравствуйте, нужен каталог обуви")  # a new lead's first question: urgent

    thread = await team.topic(newer_than=waiting.thread, timeout=15)
    card, question = await team.wait(thread, 2, timeout=15)
    follow_up = (await team.wait(waiting.thread, 3, timeout=15))[2]
    assert "photo" in follow_up and question["text"] == "Здравствуйте, нужен каталог обуви"
    assert card["message_id"] < question["message_id"] < follow_up["message_id"]


async def test_queued_posts_survive_a_restart(sandbox: TelegramSandbox, database_url: str, tmp_path: Path,
                                              renderer: CatalogRenderer, buyer: Buyer, team: Team) -> None:
    settings = relay_settings(sandbox, database_url, tmp_path)
    texts = ["Вопрос 1", "Вопрос 2", "Вопрос 3"]
    async with running(settings, renderer) as app:
        limit_groups(sandbox, app, posts=2, window=60)
        opened = await open_topic(app, buyer, team)
        for text in texts:
            buyer.send(text)

        async def queued() -> bool:
            async with app.db() as session:
                return await pacer.count(session) == 3

        await eventually(queued)
    assert len(team.bot_messages(opened.thread)) == 2  # stopped while the three waited for the group

    sandbox.rate_limits(enabled=False)  # a minute later: the group has room again
    async with running(settings, renderer) as app:
        await eventually(lambda: all_relayed(app, sandbox, {opened.lead_id: ["Здравствуйте!", *texts]}), timeout=15)


async def test_two_groups_share_the_conversations(sandbox: TelegramSandbox, database_url: str, tmp_path: Path,
                                                  renderer: CatalogRenderer, team: Team) -> None:
    operators = tmp_path / "two-groups.yaml"
    operators.write_text(f"operators:\n  - {{tg_id: {IVAN}, name: Иван, amocrm_user_id: 9001, chat_id: {OPERATORS}}}\n",
                         encoding="utf-8")
    settings = relay_settings(sandbox, database_url, tmp_path, OPERATOR_CHAT_IDS=f"{SECOND}", OPERATORS_CONFIG=operators)
    sandbox.add_group(SECOND, "Второй отдел", forum=True, members=[PETR], admins=[OLGA])
    sandbox.add_group(ELSEWHERE, "Посторонние", forum=True, members=[STRANGER, IVAN], admins=[OLGA])
    async with running(settings, renderer) as app:
        limit_groups(sandbox, app, posts=3, window=2)
        people = buyers(sandbox, 5)
        expected: dict[int, list[str]] = {}
        for index, person in enumerate(people):  # the last one is Ivan's lead: his group, whatever the count says
            expected[await lead_of(app, person, responsible_user_id=9001 if index == 4 else None)] = [f"{person.id}: раз", f"{person.id}: два"]
        for person in people:
            person.send(f"{person.id}: раз")
            person.send(f"{person.id}: два")
        await eventually(lambda: all_relayed(app, sandbox, expected), timeout=30)

        found = await threads(app)
        by_group = {chat: sorted(lead for lead, row in found.items() if row.chat_id == chat) for chat in (OPERATORS, SECOND)}
        ivans = max(expected)
        assert by_group[OPERATORS] == sorted([lead for lead in expected if lead % 2 == 0] + [ivans])
        assert by_group[SECOND] == sorted(lead for lead in expected if lead % 2 == 1 and lead != ivans)
        assert [t for t in sandbox.throttles if t.scope in ("group", "topics")] == []

        # managers answer in either group; a group that is not configured is ignored, commands included
        second = found[by_group[SECOND][0]]
        buyer_id = people[[*expected].index(by_group[SECOND][0])].id
        sandbox.send_text(PETR, "Добрый день, отвечаю из второго отдела", chat_id=SECOND, message_thread_id=second.thread_id)
        answer = await sandbox.wait_for_messages(buyer_id, 1, predicate=lambda m: "второго отдела" in m.get("text", ""))
        assert answer[0]["text"] == "Добрый день, отвечаю из второго отдела"
        sandbox.send_text(IVAN, "/stats", chat_id=ELSEWHERE)
        sandbox.send_text(PETR, "/stats", chat_id=SECOND)
        await sandbox.wait_for_messages(SECOND, 1, predicate=lambda m: "Первый ответ покупателю" in m.get("text", ""))
        assert sandbox.messages(ELSEWHERE, from_bot=True) == []


async def test_two_instances_pacing_one_group_at_once_post_each_once_in_order(sandbox: TelegramSandbox, database_url: str,
                                                                             tmp_path: Path, renderer: CatalogRenderer) -> None:
    """Two instances' pacers (each its own engine) take rounds at one group's queue at the same moments: each lead's
    topic is created once and gets every queued post once, in order."""
    settings = relay_settings(sandbox, database_url, tmp_path)
    sandbox.rate_limits(enabled=False, group_limits=False)  # the claims are under test here, not the budgets
    first, second = App(settings, renderer=renderer), App(settings, renderer=renderer)
    await first.start()  # neither serves: the test runs their pacers' rounds
    try:
        expected: dict[int, list[str]] = {}
        for person in buyers(sandbox, 4):
            lead = await known_lead(first, person, first_name=f"Покупатель{person.id}", last_name=None, tg_username=None)
            expected[lead.id] = [f"{person.id}: заметка {number}" for number in range(3)]
            for text in expected[lead.id]:
                await first.relay.pacer.notice(lead, OPERATORS, text, urgent=False)
        for _ in range(10):
            if await queue_empty(first):
                break
            await asyncio.gather(first.relay.pacer.round(OPERATORS), second.relay.pacer.round(OPERATORS))  # a group's loop per instance
        assert await all_relayed(first, sandbox, expected)
        assert [call.method for call in sandbox.calls].count("createForumTopic") == len(expected)
    finally:
        await second.close()
        await first.close()


@pytest.mark.redis
async def test_instances_share_a_groups_budget_through_redis() -> None:
    """Two instances posting into one group: together never more than its budget in any window; ``ready``
    waits while the other instance has spent it."""
    settings = load_settings(_env_file=None, REDIS_URL=os.environ["OPTOBOT_TEST_REDIS_URL"], GROUP_POSTS_PER_MINUTE=5)
    first, second = Budgets(settings), Budgets(settings)
    group = -100_000_000_000 - uuid.uuid4().int % 1_000_000  # a group of its own: nothing left from another run
    stamps: list[float] = []
    for budgets in (first, second):
        budgets.period = 1.0

    async def post(budgets: Budgets) -> None:
        async with budgets.post(group):
            stamps.append(time.monotonic())

    try:
        await asyncio.gather(*(post(first if i % 2 else second) for i in range(15)))
        started = time.monotonic()
        await first.ready(group)  # the last posts count until a second after they were answered
        waited = time.monotonic() - started
    finally:
        await first.close()
        await second.close()
    assert most_in_any_window(stamps, 0.98) <= 5  # 20 ms of slack for the trip back from Redis
    assert stamps[-1] - stamps[0] >= 1.9 and waited > 0.5


async def test_a_post_under_way_when_its_instance_died_goes_again_announced_as_a_possible_repeat(
        sandbox: TelegramSandbox, database_url: str, tmp_path: Path, renderer: CatalogRenderer, buyer: Buyer, team: Team) -> None:
    settings = relay_settings(sandbox, database_url, tmp_path)
    async with running(settings, renderer) as app:
        opened = await open_topic(app, buyer, team)
    env = {**environment(tmp_path, DATA_DIR=str(tmp_path / "killed")), "BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": sandbox.base_url,
           "DATABASE_URL": database_url, "WEBHOOK_SECRET": SECRET, "HTTP_PORT": "0", "REPORT_SCHEDULE": "off",
           "LOG_LEVEL": "ERROR", "PYTHONPATH": str(PROJECT_DIR), "OPERATOR_CHAT_ID": str(OPERATORS),
           "OPERATORS_CONFIG": str(settings.operators_config), "ADMIN_IDS": str(OLGA), "WORKING_HOURS": "00:00-24:00",
           "WORKING_DAYS": "1-7"}
    for method in ("copyMessage", "copyMessages"):
        sandbox.set_delay(30, method=method)  # the photo's copy is under way when the kill lands
    service = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "run", cwd=tmp_path, env=env, start_new_session=True)
    try:
        sandbox.send_media(buyer.id, "photo", caption="Вот такие нужны")

        async def under_way() -> bool:
            assert service.returncode is None, "optobot run exited"
            async with db() as session:
                return (await session.scalars(select(RelayPost.attempts))).all() == [1]

        db = open_database(database_url)
        await until(under_way, 60, "the photo's copy to be under way")
    finally:
        os.killpg(service.pid, signal.SIGKILL)
        await service.wait()
        await db.close()
    for method in ("copyMessage", "copyMessages"):
        sandbox.set_delay(0, method=method)

    async with running(settings, renderer) as app:
        async with app.db.begin() as session:  # a minute later: the dead instance's lease ran out
            await session.execute(update(RelayPost).values(lease_until=None))
        await eventually(lambda: queue_empty(app), timeout=30)
    topic = sandbox.messages(OPERATORS, thread_id=opened.thread, from_bot=True)
    assert topic[-2]["text"].startswith("↻ Бот перезапускался") and topic[-1].get("caption") == "Вот такие нужны", topic[-2:]
