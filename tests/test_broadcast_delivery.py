"""The delivery engine over HTTP against the sandbox (Telegram's flood limits on unless said otherwise)."""
from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from aiogram.types import FSInputFile
from aiogram.types import Message as TgMessage
from sqlalchemy import select

from bot.app import App
from bot.db.models import Lead, LeadEvent
from bot.ports import SendDocument
from bot.ratelimit import Window, paced
from bot.sandbox.amocrm.server import peak_rate
from bot.sandbox.telegram import TelegramSandbox
from broadcasts import stats
from broadcasts.content import MAX_SKIPPED
from broadcasts.markup import plain
from broadcasts.models import Delivery
from broadcasts.segments import Recipient
from tests.broadcast_support import (  # noqa: F401  (fixtures)
    MOSCOW,
    FakeClock,
    add_leads,
    bapp,
    broadcast,
    broadcast_settings,
    clock,
    create,
    deliveries,
    received,
    states,
    until_done,
)


def texts(sandbox: TelegramSandbox, user_id: int) -> list[str]:
    return [m.get("text") or m.get("caption") or "" for m in sandbox.messages(user_id, from_bot=True)]


async def test_everyone_gets_one_personalised_message_with_an_unsubscribe_button(bapp: App, sandbox: TelegramSandbox) -> None:
    sandbox.rate_limits(enabled=True)
    await add_leads(bapp, sandbox, 5)
    await add_leads(bapp, sandbox, 1, first_id=6000, first_name="<b>Хак</b> & Co")
    broadcast_id = await create(bapp, text="Привет, {{ first_name }}! <b>Новинки</b> в {{ city }}.")
    await until_done(bapp, broadcast_id)

    got = received(sandbox, [*range(5000, 5005), 6000])
    assert all(len(messages) == 1 for messages in got.values()), got
    assert got[5000][0]["text"] == "Привет, Покупатель0! Новинки в Казань."
    hacked = got[6000][0]
    assert hacked["text"] == "Привет, <b>Хак</b> & Co! Новинки в Казань."  # the name is text, not markup
    bold = [e for e in hacked["entities"] if e["type"] == "bold"]
    assert [hacked["text"][e["offset"]:e["offset"] + e["length"]] for e in bold] == ["Новинки"]
    [[unsubscribe]] = got[5000][0]["reply_markup"]["inline_keyboard"]
    assert "Отписаться" in unsubscribe["text"]
    assert await states(bapp, broadcast_id) == {"sent": 6}
    assert (await broadcast(bapp, broadcast_id)).state == "finished"
    async with bapp.db() as session:
        stamped = (await session.execute(select(Lead.last_broadcast_at))).scalars().all()
    assert stamped == [bapp.broadcasts.clock()] * 6
    assert sandbox.throttles == []


async def test_language_variants_and_segment(bapp: App, sandbox: TelegramSandbox) -> None:
    await add_leads(bapp, sandbox, 1, first_id=5000, language="en")
    await add_leads(bapp, sandbox, 1, first_id=5001)
    await add_leads(bapp, sandbox, 1, first_id=5002, interests={"category": ["women"]})
    broadcast_id = await create(bapp, segment={"category": ["shoes"]}, text={"ru": "Новинки обуви", "en": "New shoes"})
    await until_done(bapp, broadcast_id)
    assert (texts(sandbox, 5000), texts(sandbox, 5001), texts(sandbox, 5002)) == (["New shoes"], ["Новинки обуви"], [])
    assert "Unsubscribe" in sandbox.messages(5000, from_bot=True)[0]["reply_markup"]["inline_keyboard"][0][0]["text"]


async def test_dead_recipients_are_marked_unreachable_and_never_retried(bapp: App, sandbox: TelegramSandbox) -> None:
    sandbox.rate_limits(enabled=True)
    lead_ids = await add_leads(bapp, sandbox, 4)
    sandbox.block(5001)
    sandbox.deactivate(5002)
    async with bapp.db.begin() as session:
        session.add(Lead(tg_user_id=9999, first_name="Ghost"))  # never in Telegram: 400 chat not found
    broadcast_id = await create(bapp)
    await until_done(bapp, broadcast_id)

    rows = {d.lead_id: d for d in await deliveries(bapp, broadcast_id)}
    assert [rows[i].state for i in lead_ids] == ["sent", "blocked", "blocked", "sent"]
    assert rows[lead_ids[1]].error == "Forbidden: bot was blocked by the user"
    assert rows[lead_ids[2]].error == "Forbidden: user is deactivated"
    assert [d.state for d in rows.values() if d.lead_id not in lead_ids] == ["blocked"]
    calls = [c.chat_id for c in sandbox.calls if c.method == "sendMessage"]
    assert sorted(calls) == [5000, 5001, 5002, 5003, 9999]  # one attempt each
    async with bapp.db() as session:
        blocked = (await session.execute(select(Lead.tg_user_id).where(Lead.is_blocked))).scalars().all()
        events = (await session.execute(select(LeadEvent.kind).where(LeadEvent.kind == "blocked"))).scalars().all()
    assert sorted(blocked) == [5001, 5002, 9999] and len(events) == 3

    second = await create(bapp, name="Второй")
    await until_done(bapp, second)
    assert len(await deliveries(bapp, second)) == 2  # unreachable buyers are out of every segment


async def test_a_429_storm_pauses_the_whole_sender_and_fails_nobody(bapp: App, sandbox: TelegramSandbox) -> None:
    sandbox.rate_limits(enabled=True, global_per_second=30)
    bapp.broadcasts.engine.limiter = Window(*paced(200))  # far above Telegram's limit, to provoke flood control
    user_ids = list(range(5000, 5090))
    await add_leads(bapp, sandbox, len(user_ids))
    broadcast_id = await create(bapp)
    await until_done(bapp, broadcast_id)

    assert sandbox.throttles, "the sandbox should have answered 429"
    assert await states(bapp, broadcast_id) == {"sent": 90}
    assert all(len(messages) == 1 for messages in received(sandbox, user_ids).values())
    sends = [c for c in sandbox.calls if c.method == "sendMessage" and c.ok]
    # Nothing went out while the sender was told to wait, beyond calls already under way when the 429 was answered;
    # those arrive within a few ms on a quiet machine, and within 0.25 s on one loaded at 10+ (seen here). Without the
    # pause the remaining ~60 messages would all arrive in the window, at 200/s.
    straggle = 0.25
    for throttle in sandbox.throttles:
        late = [round(c.started_at - throttle.at, 3) for c in sends
                if throttle.at + straggle < c.started_at < throttle.at + throttle.retry_after - 0.05]
        assert not late, f"{len(late)} sends arrived this many seconds into a {throttle.retry_after} s pause: {late}"


class SlowCatalog:
    """A catalogue that takes ``seconds`` to render for the ``slow`` buyers and no time for the others."""

    def __init__(self, pdf: Path, slow: range, seconds: float) -> None:
        self.pdf, self.slow, self.seconds = pdf, slow, seconds

    async def send(self, buyer: Recipient, send: SendDocument) -> TgMessage:
        if buyer.tg_user_id in self.slow:
            await asyncio.sleep(self.seconds)
        return await send(FSInputFile(self.pdf))


async def test_a_slow_render_holds_the_rate_until_its_messages_have_left(bapp: App, sandbox: TelegramSandbox, tmp_path: Path) -> None:
    """The rate limit counts from when each request leaves, not from when its grant was taken: while the first ten
    catalogues take 0.5 s to render, their grants stay taken, so no later buyer's catalogue goes ahead of them (counted
    from the grant, the next two windows' twenty would go first, and the ten would then reach Telegram together with
    the fourth window's ten: twice the rate)."""
    limit, period = paced(50)  # 10 in 0.2 s
    bapp.broadcasts.engine.limiter = Window(limit, period)
    (pdf := tmp_path / "catalog.pdf").write_bytes(b"%PDF-1.4 test")
    slow = range(5000, 5000 + limit)
    bapp.broadcasts.engine.catalog = SlowCatalog(pdf, slow=slow, seconds=0.5)
    await add_leads(bapp, sandbox, 4 * limit)
    broadcast_id = await create(bapp, text="Каталог", message={"catalog": True})
    await until_done(bapp, broadcast_id)

    assert await states(bapp, broadcast_id) == {"sent": 4 * limit}
    arrived = [c.chat_id for c in sorted((c for c in sandbox.calls if c.method == "sendDocument"), key=lambda c: c.started_at)]
    assert set(arrived[:limit]) == set(slow), arrived


async def test_server_errors_are_retried_then_recorded(bapp: App, sandbox: TelegramSandbox, clock: FakeClock) -> None:
    await add_leads(bapp, sandbox, 2)
    sandbox.fail_next("sendMessage", error_code=500, count=1, chat_id=5000)
    sandbox.fail_next("sendMessage", error_code=502, count=5, chat_id=5001)
    broadcast_id = await create(bapp)
    await until_done(bapp, broadcast_id)
    assert await states(bapp, broadcast_id) == {"pending": 2}  # waiting for their retry time

    for _ in range(3):
        clock.advance(minutes=1)
        await until_done(bapp, broadcast_id)
    first, second = await deliveries(bapp, broadcast_id)
    assert (first.state, first.attempts) == ("sent", 2)
    assert (second.state, second.attempts) == ("failed", 3) and "Bad Gateway" in second.error
    assert (await broadcast(bapp, broadcast_id)).state == "finished"
    assert texts(sandbox, 5000) == ["Привет, Покупатель0!"] and texts(sandbox, 5001) == []


async def test_a_connection_lost_after_sending_makes_the_row_unknown_never_resent_and_reported(
        bapp: App, sandbox: TelegramSandbox, clock: FakeClock) -> None:
    """The request reached Telegram and the answer never came: delivered (5000) or not (5001), the bot cannot
    tell, so the row is ``unknown``, is not tried again, and the report counts it."""
    await add_leads(bapp, sandbox, 3)
    sandbox.drop_next("sendMessage", chat_id=5000)
    sandbox.drop_next("sendMessage", executed=False, chat_id=5001)
    broadcast_id = await create(bapp)
    await until_done(bapp, broadcast_id)
    for _ in range(3):  # past every retry time a 5xx would have had
        clock.advance(minutes=1)
        await until_done(bapp, broadcast_id)

    first, second, third = await deliveries(bapp, broadcast_id)
    assert (first.state, second.state, third.state) == ("unknown", "unknown", "sent")
    assert "ServerDisconnectedError" in first.error
    assert [len(texts(sandbox, user_id)) for user_id in (5000, 5001, 5002)] == [1, 0, 1]
    assert sum(c.method == "sendMessage" and c.chat_id in (5000, 5001) for c in sandbox.calls) == 2  # never resent
    assert (await broadcast(bapp, broadcast_id)).state == "finished"
    report = stats.report("en", await bapp.broadcasts.campaigns.stats(broadcast_id), "Europe/Moscow")
    assert "unknown 2" in report


@pytest.mark.parametrize("broadcast_settings", [{"BROADCAST_MAX_ERRORS": 3}])
async def test_consecutive_errors_pause_the_broadcast(bapp: App, sandbox: TelegramSandbox) -> None:
    await add_leads(bapp, sandbox, 6)
    sandbox.fail_next("sendMessage", error_code=400, description="Bad Request: PEER_ID_INVALID", count=3)
    broadcast_id = await create(bapp)
    await until_done(bapp, broadcast_id)
    paused = await broadcast(bapp, broadcast_id)
    assert paused.state == "paused" and "3 consecutive errors" in paused.note
    assert (await states(bapp, broadcast_id))["failed"] == 3

    assert await bapp.broadcasts.campaigns.resume(broadcast_id)
    await until_done(bapp, broadcast_id)
    assert await states(bapp, broadcast_id) == {"failed": 3, "sent": 3}
    assert (await broadcast(bapp, broadcast_id)).state == "finished"


@pytest.mark.parametrize("broadcast_settings", [{"BROADCAST_MAX_ERRORS": 2}])
async def test_blocked_buyers_do_not_count_towards_the_auto_pause(bapp: App, sandbox: TelegramSandbox) -> None:
    await add_leads(bapp, sandbox, 5)
    for user_id in (5000, 5001, 5002):
        sandbox.block(user_id)
    broadcast_id = await create(bapp)
    await until_done(bapp, broadcast_id)
    finished = await broadcast(bapp, broadcast_id)
    assert (finished.state, finished.note) == ("finished", None)
    assert await states(bapp, broadcast_id) == {"blocked": 3, "sent": 2}
    assert [len(texts(sandbox, u)) for u in (5003, 5004)] == [1, 1]


async def test_pause_resume_cancel(bapp: App, sandbox: TelegramSandbox) -> None:
    sandbox.rate_limits(enabled=True)
    sandbox.set_delay(0.02, method="sendMessage")
    user_ids = list(range(5000, 5040))
    await add_leads(bapp, sandbox, len(user_ids))
    broadcast_id = await create(bapp)
    run = asyncio.create_task(bapp.broadcasts.tick())
    await sandbox.wait_for_messages(5004, 1)
    assert await bapp.broadcasts.campaigns.pause(broadcast_id)
    assert await run == {broadcast_id: "stopped"}
    paused = await states(bapp, broadcast_id)
    assert paused["pending"] > 0 and "sending" not in paused and (await broadcast(bapp, broadcast_id)).state == "paused"
    assert await bapp.broadcasts.tick() == {}  # a paused broadcast is not sent

    assert await bapp.broadcasts.campaigns.resume(broadcast_id)
    await until_done(bapp, broadcast_id)
    assert await states(bapp, broadcast_id) == {"sent": 40}
    assert all(len(messages) == 1 for messages in received(sandbox, user_ids).values())
    assert not await bapp.broadcasts.campaigns.cancel(broadcast_id)  # finished: too late

    other = await create(bapp, name="Отменённая")
    assert await bapp.broadcasts.campaigns.cancel(other)
    assert await bapp.broadcasts.tick() == {}
    assert (await broadcast(bapp, other)).state == "cancelled"
    assert await states(bapp, other) == {}  # cancelled before its audience was selected


async def test_quiet_hours_follow_the_buyers_time_zone(bapp: App, sandbox: TelegramSandbox, clock: FakeClock) -> None:
    await add_leads(bapp, sandbox, 1, first_id=5000)  # Казань: Moscow time
    await add_leads(bapp, sandbox, 1, first_id=5001, interests={"category": ["shoes"], "city": "Новосибирск"})  # +4 h
    await add_leads(bapp, sandbox, 1, first_id=5002, interests={"category": ["shoes"], "city": "екатеринбург"})  # +2 h
    clock.set_local(20, 30)
    broadcast_id = await create(bapp)
    await until_done(bapp, broadcast_id)
    assert [len(texts(sandbox, u)) for u in (5000, 5001, 5002)] == [1, 0, 0]
    waiting = {d.lead_id: d.due_at for d in await deliveries(bapp, broadcast_id) if d.state == "pending"}
    assert sorted(t.astimezone(MOSCOW).strftime("%H:%M") for t in waiting.values()) == ["05:00", "07:00"]

    clock.advance(hours=8, minutes=31)  # 05:01 in Moscow, 09:01 in Novosibirsk, 07:01 in Yekaterinburg
    await until_done(bapp, broadcast_id)
    assert [len(texts(sandbox, u)) for u in (5000, 5001, 5002)] == [1, 1, 0]
    clock.advance(hours=2)
    await until_done(bapp, broadcast_id)
    assert [len(texts(sandbox, u)) for u in (5000, 5001, 5002)] == [1, 1, 1]
    assert (await broadcast(bapp, broadcast_id)).state == "finished"


async def test_a_buyer_who_unsubscribes_after_selection_is_skipped(bapp: App, sandbox: TelegramSandbox, clock: FakeClock) -> None:
    """Both buyers are selected in the evening and held for the morning; one sends /stop meanwhile."""
    await add_leads(bapp, sandbox, 2)  # Казань: Moscow time
    clock.set_local(22, 0)
    broadcast_id = await create(bapp)
    await until_done(bapp, broadcast_id)
    assert await states(bapp, broadcast_id) == {"pending": 2}
    sandbox.send_text(5001, "/stop")
    [confirmation] = await sandbox.wait_for_messages(5001, 1)
    assert confirmation["text"].startswith("Вы отписались")

    clock.advance(hours=11, minutes=1)  # 09:01
    await until_done(bapp, broadcast_id)
    rows = await deliveries(bapp, broadcast_id)
    assert [(d.state, d.error) for d in rows] == [("sent", None), ("skipped", "unsubscribed or unreachable")]
    assert texts(sandbox, 5000) == ["Привет, Покупатель0!"] and texts(sandbox, 5001) == [confirmation["text"]]
    assert (await broadcast(bapp, broadcast_id)).state == "finished"


async def test_scheduled_in_the_configured_time_zone(bapp: App, sandbox: TelegramSandbox, clock: FakeClock) -> None:
    await add_leads(bapp, sandbox, 2)
    local = (clock.now + timedelta(days=1)).astimezone(MOSCOW).replace(hour=11, minute=0, second=0, microsecond=0)
    broadcast_id = await create(bapp, send_at=local.strftime("%Y-%m-%d %H:%M"))
    scheduled = await broadcast(bapp, broadcast_id)
    assert scheduled.state == "scheduled" and scheduled.send_at == local
    clock.now = local - timedelta(minutes=1)
    assert await bapp.broadcasts.tick() == {}
    clock.now = local
    await until_done(bapp, broadcast_id)
    assert [len(texts(sandbox, u)) for u in (5000, 5001)] == [1, 1]


async def test_ab_split_follows_the_weights_and_names_a_winner(bapp: App, sandbox: TelegramSandbox) -> None:
    bapp.broadcasts.engine.limiter = Window(*paced(2000))  # no Telegram limits here: the split is what is tested
    await add_leads(bapp, sandbox, 400)
    test_button = [{"text": "Хочу тест", "action": "test"}]
    broadcast_id = await create(bapp, variants=[{"name": "A", "weight": 30, "text": "Вариант A", "buttons": test_button},
                                                {"name": "B", "weight": 70, "text": "Вариант B", "buttons": test_button}])
    await until_done(bapp, broadcast_id)
    rows = await deliveries(bapp, broadcast_id)
    split = {name: sum(d.variant == name for d in rows) for name in "AB"}
    assert 95 <= split["A"] <= 145 and split["A"] + split["B"] == 400, split
    for d in rows:  # each buyer got the text of their variant
        assert texts(sandbox, 5000 + d.lead_id - rows[0].lead_id) == [f"Вариант {d.variant}"]

    clickers = [d for d in rows if d.variant == "B"][:20] + [d for d in rows if d.variant == "A"][:1]
    for d in clickers:
        sandbox.click(5000 + d.lead_id - rows[0].lead_id, sandbox.messages(5000 + d.lead_id - rows[0].lead_id)[0], f"bc:{broadcast_id}:test")
    for d in clickers:
        await sandbox.wait_for_messages(5000 + d.lead_id - rows[0].lead_id, 2)  # the journey asks for the test batch
    s = await bapp.broadcasts.campaigns.stats(broadcast_id)
    assert {g.name: g.clicks["test"] for g in s.variants} == {"A": 1, "B": 20}
    assert s.winner.name == "B" and s.winner.by == "clicks"


async def test_a_recipient_whose_own_values_break_the_message_is_skipped_and_reported(bapp: App, sandbox: TelegramSandbox) -> None:
    await add_leads(bapp, sandbox, 3)
    await add_leads(bapp, sandbox, 1, first_id=6000, interests={"city": "Санкт-Петербург" * 300})
    broadcast_id = await create(bapp, text="{{ first_name }}, новинки с доставкой в {{ city }}!")
    await until_done(bapp, broadcast_id)
    assert await states(bapp, broadcast_id) == {"sent": 3, "skipped": 1}
    assert sorted(c.params["chat_id"] for c in sandbox.calls if c.method == "sendMessage") == ["5000", "5001", "5002"]
    done = await broadcast(bapp, broadcast_id)
    assert done.state == "finished" and "1 recipient(s) skipped" in done.note
    assert "too long" in done.errors[0] and "Покупатель0" in done.errors[0]
    skipped = [d for d in await deliveries(bapp, broadcast_id) if d.state == "skipped"]
    assert "too long" in skipped[0].error
    report = plain(stats.report("ru", await bapp.broadcasts.campaigns.stats(broadcast_id), "Europe/Moscow"))
    assert "пропущено 1" in report and "too long" in report


async def test_a_message_broken_for_everyone_is_refused_before_any_send(bapp: App, sandbox: TelegramSandbox) -> None:
    await add_leads(bapp, sandbox, 3)
    broadcast_id = await create(bapp, text="<b>{{ first_name }}, новинки!")
    assert await bapp.broadcasts.tick() == {broadcast_id: "invalid"}
    refused = await broadcast(bapp, broadcast_id)
    assert refused.state == "draft" and "3 recipient(s) fail validation" in refused.note and "unclosed <b>" in refused.errors[0]
    assert await deliveries(bapp, broadcast_id) == [] and [c for c in sandbox.calls if c.method == "sendMessage"] == []


async def test_too_many_skipped_recipients_refuse_the_broadcast(bapp: App, sandbox: TelegramSandbox) -> None:
    await add_leads(bapp, sandbox, 3)
    await add_leads(bapp, sandbox, MAX_SKIPPED + 1, first_id=6000, interests={"city": "Санкт-Петербург" * 300})
    broadcast_id = await create(bapp, text="{{ first_name }}, новинки с доставкой в {{ city }}!")
    assert await bapp.broadcasts.tick() == {broadcast_id: "invalid"}
    refused = await broadcast(bapp, broadcast_id)
    assert refused.state == "draft" and f"{MAX_SKIPPED + 1} recipient(s) fail validation" in refused.note
    assert await deliveries(bapp, broadcast_id) == [] and [c for c in sandbox.calls if c.method == "sendMessage"] == []


@pytest.mark.parametrize("broadcast_settings", [{"BROADCAST_PAID": "true"}])
async def test_paid_broadcasts_ask_telegram_for_the_paid_limit(bapp: App, sandbox: TelegramSandbox) -> None:
    await add_leads(bapp, sandbox, 3)
    broadcast_id = await create(bapp)
    await until_done(bapp, broadcast_id)
    sends = [c for c in sandbox.calls if c.method == "sendMessage"]
    assert len(sends) == 3 and all(c.params.get("allow_paid_broadcast") in (True, "true") for c in sends)
    assert bapp.broadcasts.rate == 1000
    async with bapp.db() as session:
        assert (await session.execute(select(Delivery.state))).scalars().all() == ["sent"] * 3


async def test_the_buyers_own_catalogue_goes_as_the_attachment(bapp: App, sandbox: TelegramSandbox) -> None:
    await add_leads(bapp, sandbox, 2, first_name="Анна")  # the same personalisation: rendered and uploaded once
    broadcast_id = await create(bapp, text="{{ first_name }}, ваш каталог с оптовыми ценами", message={"catalog": True})
    await until_done(bapp, broadcast_id)
    first, second = (sandbox.messages(user_id, from_bot=True) for user_id in (5000, 5001))
    assert len(first) == len(second) == 1 and first[0]["caption"] == "Анна, ваш каталог с оптовыми ценами"
    assert first[0]["document"]["file_name"].startswith("Каталог ОптЛиния — Анна")
    assert first[0]["document"]["file_id"] == second[0]["document"]["file_id"]
    uploads = [c for c in sandbox.calls if c.method == "sendDocument" and c.params["document"].startswith("attach://")]
    assert len(uploads) == 1  # the second one went by file_id
