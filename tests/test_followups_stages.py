"""Stage messages: deals driven through both pipelines by amoCRM webhooks over HTTP (duplicates, out of order, a lost
one recovered by the reconcile), each message once, held in the buyer's quiet hours, not sent to a buyer who blocked
the bot; mirrored to the operator topic and amoCRM; two instances never send one twice."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app import App, create_app
from bot.bodies import BadBody
from bot.config import ConfigError, load_settings
from bot.crm.webhooks import deal_fields, parse_changes
from bot.db.models import Lead
from bot.followups import store
from bot.followups.models import FollowUp
from bot.followups.service import FollowUps
from bot.sandbox.amocrm import AmoSandbox
from bot.sandbox.telegram import TelegramSandbox
from tests.buyer import Buyer
from tests.crm_support import db  # noqa: F401  (fixture)
from tests.followups_support import (  # noqa: F401  (fixtures)
    MOSCOW,
    NOON,
    amocrm,
    app,
    bot_texts,
    buyer,
    clock,
    extra_settings,
    followups,
    new_deal,
    settled,
    started,
)
from tests.relay_support import OPERATORS, FakeClock, eventually, relay_settings


async def test_each_stage_message_goes_once_through_both_pipelines(app: App, amocrm: AmoSandbox, sandbox: TelegramSandbox,
                                                                   buyer: Buyer) -> None:
    lead, deal = await new_deal(app, amocrm, buyer)
    deal.set_fields(**{"Трек-номер": "RR123<b>RU", "Дата доставки": "05.12"})

    await deal.move("test_batch_sent")
    shipped = await buyer.reply()
    assert shipped["text"].startswith("Анна, ваша тестовая партия отправлена")
    assert "Трек-номер: RR123<b>RU" in shipped["text"] and "Ожидаемая дата доставки: 05.12" in shipped["text"]
    assert any(e["type"] == "bold" for e in shipped["entities"])  # the template's markup; the field's «<b>» stayed text

    await deal.replay("test_batch_sent")  # the same webhook twice: the stage did not change, nothing happens
    await deal.move("test_batch_received")  # into the second pipeline
    assert "Тестовая партия у вас" in (await buyer.reply())["text"]
    await deal.replay("test_batch_sent")  # a late webhook of the stage before: the lead steps back, nothing is sent
    await deal.replay("test_batch_received")  # … and forward again: that stage's message went already
    await deal.move("test_batch_approved")  # a stage without a message
    amocrm.account.update_leads([{"id": deal.id, "status_id": deal.status("main_batch_agreed")[0]}])  # this webhook is lost
    assert await app.crm.checks.reconcile() >= 1
    agreed, question = await buyer.replies(2)
    assert "Основная партия согласована" in agreed["text"] and question["text"].startswith("Пришлите, пожалуйста, ИНН")
    await deal.move("main_batch_sent")
    assert "Основная партия отправлена" in (await buyer.reply())["text"]
    await eventually(lambda: settled(app, lead.id))

    texts = bot_texts(sandbox, buyer.id)
    assert len(texts) == 5, texts
    rows = await followups(app, lead.id)
    assert [(r.kind, r.stage, r.state) for r in rows] == [
        ("stage", "test_batch_sent", "done"), ("stage", "test_batch_received", "done"), ("survey", "test_batch_received", "pending"),
        ("stage", "main_batch_agreed", "done"), ("ask", "main_batch_agreed", "done"), ("stage", "main_batch_sent", "done"),
        ("reorder", "main_batch_sent", "pending")]
    assert [r.key for r in rows if r.kind == "stage"] == [f"stage:D{deal.id}:{r.stage}" for r in rows if r.kind == "stage"]

    # mirrored: the operator topic and amoCRM (a note per message) like any bot message
    await eventually(lambda: len([t for t in bot_texts(sandbox, OPERATORS) if t.startswith("🤖 Бот → покупателю")]) == 4)
    topic = [t for t in bot_texts(sandbox, OPERATORS) if t.startswith("🤖 Бот → покупателю")]
    assert "этап «Тестовая партия отправлена»" in topic[0] and "RR123<b>RU" in topic[0]

    def notes() -> list[str]:
        return [n["params"]["text"] for n in amocrm.account.find_notes(entity_ids=[deal.id])]

    await eventually(lambda: sum("Основная партия отправлена" in n for n in notes()) == 1, timeout=15)
    assert sum("ваша тестовая партия отправлена" in n for n in notes()) == 1


async def test_quiet_hours_in_the_buyers_time_zone_hold_it_until_morning(app: App, amocrm: AmoSandbox, sandbox: TelegramSandbox,
                                                                         buyer: Buyer, clock: FakeClock) -> None:
    interests = {"category": ["shoes"], "city": "Новосибирск"}  # UTC+7: 03:00 in Moscow is 07:00 there
    lead, deal = await new_deal(app, amocrm, buyer, interests=interests)
    clock.set(datetime(2026, 12, 2, 3, 0, tzinfo=MOSCOW))
    await deal.move("test_batch_sent")

    async def held() -> bool:
        rows = await followups(app, lead.id)
        return bool(rows) and rows[0].reason == "quiet hours" and rows[0].state == "pending"

    await eventually(held)
    row = (await followups(app, lead.id))[0]
    assert row.due_at == datetime(2026, 12, 2, 9, 0, tzinfo=ZoneInfo("Asia/Novosibirsk"))
    assert await app.followups.tick() is False  # still night there: nothing is due
    assert bot_texts(sandbox, buyer.id) == []

    clock.set(datetime(2026, 12, 2, 5, 0, 1, tzinfo=MOSCOW))  # 09:00:01 in Novosibirsk
    app.followups.wake.set()
    assert "тестовая партия отправлена" in (await buyer.reply())["text"]
    await eventually(lambda: settled(app, lead.id))
    assert len(bot_texts(sandbox, buyer.id)) == 1


async def test_a_deal_that_moves_on_overnight_sends_only_the_newer_stages_message(app: App, amocrm: AmoSandbox,
                                                                                  sandbox: TelegramSandbox, buyer: Buyer,
                                                                                  clock: FakeClock) -> None:
    lead, deal = await new_deal(app, amocrm, buyer)

    async def held(stage: str) -> bool:
        return any(r.stage == stage and r.reason == "quiet hours" for r in await followups(app, lead.id)) and await settled(app, lead.id)

    clock.set(datetime(2026, 12, 1, 23, 0, tzinfo=MOSCOW))
    await deal.move("test_batch_sent")
    await eventually(lambda: held("test_batch_sent"))
    clock.set(datetime(2026, 12, 2, 2, 0, tzinfo=MOSCOW))
    await deal.move("test_batch_received")  # the batch arrived before the morning
    await eventually(lambda: held("test_batch_received"))
    assert bot_texts(sandbox, buyer.id) == []

    clock.set(datetime(2026, 12, 2, 9, 0, 1, tzinfo=MOSCOW))
    app.followups.wake.set()
    assert "Тестовая партия у вас" in (await buyer.reply())["text"]
    await eventually(lambda: settled(app, lead.id))
    assert len(bot_texts(sandbox, buyer.id)) == 1, bot_texts(sandbox, buyer.id)
    assert [(r.stage, r.state, r.reason) for r in await followups(app, lead.id) if r.kind == "stage"] == [
        ("test_batch_sent", "skipped", "stale: the deal has moved on"), ("test_batch_received", "done", None)]


async def test_a_buyer_who_blocked_the_bot_is_skipped_and_flagged(app: App, amocrm: AmoSandbox, sandbox: TelegramSandbox,
                                                                  buyer: Buyer) -> None:
    lead, deal = await new_deal(app, amocrm, buyer)
    sandbox.block(buyer.id)
    await deal.move("test_batch_sent")

    async def skipped() -> bool:
        rows = await followups(app, lead.id)
        return bool(rows) and rows[0].state == "skipped"

    await eventually(skipped)
    assert (await followups(app, lead.id))[0].reason == "blocked"
    async with app.db() as session:
        assert (await session.get(Lead, lead.id)).is_blocked
    await eventually(lambda: any("Не отправлено (этап «Тестовая партия отправлена»): покупатель заблокировал бота" in t for t in bot_texts(sandbox, OPERATORS)))

    await deal.move("test_batch_received")  # known blocked now: skipped without trying Telegram
    await eventually(lambda: settled(app, lead.id))
    assert [(r.stage, r.state, r.reason) for r in await followups(app, lead.id) if r.kind == "stage"] == [
        ("test_batch_sent", "skipped", "blocked"), ("test_batch_received", "skipped", "blocked")]
    assert bot_texts(sandbox, buyer.id) == []


async def test_a_buyer_who_unsubscribed_still_gets_the_messages_about_their_order(app: App, amocrm: AmoSandbox,
                                                                                  sandbox: TelegramSandbox, buyer: Buyer) -> None:
    """/stop opts out of marketing only: the confirmation says order messages still come, and the stage message goes."""
    lead, deal = await new_deal(app, amocrm, buyer)
    buyer.send("/stop")
    confirmation = (await buyer.reply())["text"]
    async with app.db() as session:
        assert (await session.get(Lead, lead.id)).unsubscribed_at is not None
    await deal.move("test_batch_sent")
    shipped = await buyer.reply()
    await eventually(lambda: settled(app, lead.id))

    assert confirmation.startswith("Вы отписались от рассылок") and "сообщения о ваших заказах" in confirmation
    assert "тестовая партия отправлена" in shipped["text"]
    assert [(r.stage, r.state) for r in await followups(app, lead.id) if r.kind == "stage"] == [("test_batch_sent", "done")]


async def test_two_instances_never_send_one_message_twice(app: App, amocrm: AmoSandbox, sandbox: TelegramSandbox,
                                                          clock: FakeClock) -> None:
    buyers = [started(sandbox, 2000 + i, f"Покупатель{i}") for i in range(12)]
    other = FollowUps(app.settings, app.db, app.journal, app.messenger, catalog=app.catalog, clock=clock)  # a second instance's loop
    app.followups.wake.clear()
    clock.set(datetime(2026, 12, 1, 23, 0, tzinfo=MOSCOW))  # held overnight, then both instances wake at 09:00
    for buyer in buyers:
        _, deal = await new_deal(app, amocrm, buyer, tg_username=None, phone=None)
        await deal.move("test_batch_sent")
    clock.set(datetime(2026, 12, 2, 9, 0, 1, tzinfo=MOSCOW))
    await asyncio.gather(other.tick(), app.followups.tick(), other.tick(), app.followups.tick())
    for buyer in buyers:
        await eventually(lambda: len(bot_texts(sandbox, buyer.id)) >= 1)
    async with app.db() as session:
        states = (await session.scalars(select(FollowUp.state))).all()
    assert sorted(set(states)) == ["done"] and len(states) == 12
    assert [len(bot_texts(sandbox, buyer.id)) for buyer in buyers] == [1] * 12


async def test_a_wrong_stage_messages_file_is_one_line_naming_the_setting(sandbox: TelegramSandbox, database_url: str,
                                                                          tmp_path: Path) -> None:
    path = tmp_path / "stages.yaml"
    path.write_text("stages:\n  shipped:\n    ru: Привет\n", encoding="utf-8")
    settings = relay_settings(sandbox, database_url, tmp_path, STAGE_MESSAGES=path)
    with pytest.raises(ConfigError, match=r"^optobot: STAGE_MESSAGES: .*'shipped' is not a funnel stage"):
        create_app(settings)
    path.write_text("stages:\n  test_batch_sent:\n    ru: '{{ fields.tracking'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^optobot: STAGE_MESSAGES: .*stages.test_batch_sent.ru"):
        create_app(settings)
    with pytest.raises(ConfigError, match="STAGE_MESSAGES"):
        load_settings(_env_file=None, STAGE_MESSAGES=tmp_path / "missing.yaml")


def test_deal_fields_are_read_from_webhooks_and_the_api() -> None:
    form = {"leads": {"status": [{"id": "5", "status_id": "7", "custom_fields": [
        {"id": "11", "name": "Трек-номер", "values": [{"value": "RR1"}]}, {"id": "12", "name": "Категория", "values": [{"value": "Обувь", "enum": "3"}]},
        {"id": "13", "name": "Пусто", "values": []}]}]}}
    assert parse_changes(form)[0].fields == {"Трек-номер": "RR1", "Категория": "Обувь"}
    with pytest.raises(BadBody, match=r"leads\[status\]\[0\]\[custom_fields\] must be a list"):
        parse_changes({"leads": {"status": [{"id": "5", "custom_fields": "x"}]}})
    assert deal_fields([{"field_id": 1, "field_name": "Трек-номер", "values": [{"value": "RR1"}]}, {"field_id": 2, "values": []}]) == {"Трек-номер": "RR1"}
    assert deal_fields(None) == {}


async def test_a_claim_that_ran_out_can_not_touch_the_row_another_instance_took(db: async_sessionmaker[AsyncSession]) -> None:
    async with db.begin() as session:
        lead = Lead(tg_user_id=7, first_name="Анна")
        session.add(lead)
        await session.flush()
        await store.schedule(session, lead_id=lead.id, kind="stage", key="stage:L1:test_batch_sent", due_at=NOON, now=NOON)
    async with db.begin() as session:
        [first] = await store.claim_due(session, NOON, timedelta(minutes=2), 10)
    async with db.begin() as session:
        assert await store.claim_due(session, NOON + timedelta(minutes=1), timedelta(minutes=2), 10) == []  # still held
        [second] = await store.claim_due(session, NOON + timedelta(minutes=3), timedelta(minutes=2), 10)  # the lease ran out
    async with db.begin() as session:
        assert await store.postpone(session, first, NOON + timedelta(hours=9), reason="quiet hours") is False
        assert await store.finish(session, first, "done") is False
    async with db.begin() as session:
        assert await store.finish(session, second, "done") is True
    async with db() as session:
        row = await session.get(FollowUp, second.id)
    assert (row.state, row.attempts, row.reason) == ("done", 2, None)
