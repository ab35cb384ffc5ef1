"""Reorder offers: after «Основная партия отправлена» the bot learns the buyer's rhythm and, REORDER_NOTICE_DAYS before the
expected reorder, offers what is new in their categories since the last order at their tier's prices; «Повторить заказ»
moves the deal to «Повторная продажа» with a task for the manager, «Пока не нужно» offers again later; a buyer who
orders on their own is not offered."""
from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.app import App
from bot.config import DEFAULT_CATALOG_DIR
from bot.crm.models import DONE, OutboxItem
from bot.db.models import Lead
from bot.followups.upcoming import line, upcoming
from bot.sandbox.amocrm import AmoSandbox
from bot.sandbox.amocrm.account import LOST, WON
from bot.sandbox.telegram import TelegramSandbox
from tests.buyer import Buyer, buttons
from tests.followups_support import (  # noqa: F401  (fixtures)
    MOSCOW,
    NOON,
    Deal,
    amocrm,
    app,
    bot_texts,
    buyer,
    clock,
    followups,
    new_deal,
    settled,
)
from tests.relay_support import OPERATORS, FakeClock, eventually

DAY = timedelta(days=1)
NEW_SHOES = """
  - sku: S-499
    name: "Слипоны <летние> & лёгкие"
    category: shoes
    unit: pairs
    prices: {upto100k: 1300, 100to300k: 1234, 300kto1m: 1100, over1m: 1000}
  - sku: W-199
    name: "Платье новое"
    category: women
    prices: {upto100k: 1300, 100to300k: 1200, 300kto1m: 1100, over1m: 1000}
"""


@pytest.fixture
def catalog_dir(tmp_path: Path) -> Path:
    return Path(shutil.copytree(DEFAULT_CATALOG_DIR, tmp_path / "catalog"))


@pytest.fixture
def extra_settings(catalog_dir: Path) -> dict[str, Any]:
    return {"CATALOG_DIR": catalog_dir}


def add_products(catalog_dir: Path) -> None:
    """The supplier adds new shoes (the buyer's category) and a dress (not theirs)."""
    with (catalog_dir / "catalog.yaml").open("a", encoding="utf-8") as file:
        file.write(NEW_SHOES)


async def shipped(app: App, deal: Deal, buyer: Buyer, lead_id: int, *, first: bool = True) -> None:
    """The deal enters «Основная партия отправлена» (the buyer is told the first time only)."""
    await deal.move("main_batch_sent")
    if first:
        assert "Основная партия отправлена" in (await buyer.reply())["text"]
    await eventually(lambda: settled(app, lead_id))


async def offer_at(app: App, clock: FakeClock, sandbox: TelegramSandbox, buyer: Buyer, due: Any) -> dict[str, Any]:
    """Nothing a minute before ``due``; the offer a minute after."""
    before = len(bot_texts(sandbox, buyer.id))
    clock.set(due - timedelta(minutes=1))
    assert await app.followups.tick() is False
    assert len(bot_texts(sandbox, buyer.id)) == before
    clock.set(due + timedelta(minutes=1))
    app.followups.wake.set()
    offer = await buyer.reply()
    assert offer["text"].startswith("Пора пополнить запасы?")
    return offer


async def test_the_offer_goes_at_the_learned_time_with_whats_new_at_the_buyers_prices(
        app: App, amocrm: AmoSandbox, sandbox: TelegramSandbox, buyer: Buyer, clock: FakeClock, catalog_dir: Path) -> None:
    lead, deal = await new_deal(app, amocrm, buyer)
    await shipped(app, deal, buyer, lead.id)
    clock.set(NOON + 18 * DAY)
    await deal.move("repeat_sale")  # the second order, 20 days after the first: the rhythm is 20 days
    clock.set(NOON + 20 * DAY)
    await shipped(app, deal, buyer, lead.id, first=False)
    add_products(catalog_dir)

    offer = await offer_at(app, clock, sandbox, buyer, NOON + 37 * DAY)  # 20 days after the last, 3 days early
    lines = offer["text"].splitlines()
    assert lines[1:4] == ["Новинки в ваших категориях с прошлого заказа:", "• Слипоны <летние> & лёгкие — 1\u00a0234\u00a0₽ за пару", ""]
    assert "Ваши цены (100–300 тыс ₽):" in lines and any(line.startswith("• Обувь: ") for line in lines)
    assert "Платье новое" not in offer["text"] and "Женская одежда" not in offer["text"]  # not the buyer's category
    assert [text for text, _ in buttons(offer)] == ["🔁 Повторить заказ", "Пока не нужно"]
    await eventually(lambda: any(t.startswith("🤖 Бот → покупателю (предложение повторного заказа):") for t in bot_texts(sandbox, OPERATORS)))

    buyer.click("🔁 Повторить заказ")
    assert (await buyer.reply())["text"].startswith("Отлично! Передали менеджеру")
    answered = next(m for m in sandbox.messages(buyer.id, from_bot=True) if m["message_id"] == offer["message_id"])
    assert not buttons(answered)  # one answer
    repeat_sale = deal.status("repeat_sale")[0]
    await eventually(lambda: amocrm.account.leads[deal.id]["status_id"] == repeat_sale, timeout=15)
    await eventually(lambda: any(t["text"].startswith("Оформить повторный заказ") for t in amocrm.account.find_tasks(entity_ids=[deal.id])),
                     timeout=15)
    await eventually(lambda: any(t.startswith("🔁 Покупатель хочет повторить заказ") for t in bot_texts(sandbox, OPERATORS)))
    row = next(r for r in await followups(app, lead.id) if r.kind == "reorder" and r.state == "done")
    assert await app.followups.reorders.answer(buyer.id, row.id, False, None) == "Спасибо, ваш ответ уже учтён."


async def test_a_short_rhythm_offers_half_way_to_the_expected_reorder_not_earlier(
        app: App, amocrm: AmoSandbox, sandbox: TelegramSandbox, buyer: Buyer, clock: FakeClock) -> None:
    """Orders 4 days apart: the next is expected 4 days after the last; 3 days before it would be the day after the
    shipment, so the offer goes half-way there (2 days after)."""
    lead, deal = await new_deal(app, amocrm, buyer)
    await shipped(app, deal, buyer, lead.id)
    clock.set(NOON + 2 * DAY)
    await deal.move("repeat_sale")
    clock.set(NOON + 4 * DAY)
    await shipped(app, deal, buyer, lead.id, first=False)

    [row] = [r for r in await followups(app, lead.id) if r.kind == "reorder" and r.state == "pending"]
    assert row.due_at == NOON + 6 * DAY
    await offer_at(app, clock, sandbox, buyer, NOON + 6 * DAY)


async def test_a_buyer_who_reorders_on_their_own_is_not_offered(app: App, amocrm: AmoSandbox, sandbox: TelegramSandbox, buyer: Buyer,
                                                               clock: FakeClock) -> None:
    lead, deal = await new_deal(app, amocrm, buyer)
    await shipped(app, deal, buyer, lead.id)
    first = [r for r in await followups(app, lead.id) if r.kind == "reorder"]
    assert [(r.state, r.due_at) for r in first] == [("pending", NOON + 27 * DAY)]  # REORDER_DEFAULT_DAYS 30, 3 days early
    await deal.replay("main_batch_agreed")  # a late webhook of the shipment's own order: nothing changes
    await deal.replay("main_batch_sent")
    assert [(r.state, r.due_at) for r in await followups(app, lead.id) if r.kind == "reorder"] == [("pending", NOON + 27 * DAY)]

    clock.set(NOON + 10 * DAY)
    await deal.move("main_batch_agreed")  # the buyer ordered again by themselves
    await eventually(lambda: settled(app, lead.id))
    assert [(r.state, r.reason) for r in await followups(app, lead.id) if r.kind == "reorder"] == [("cancelled", "reordered")]
    clock.set(NOON + 20 * DAY)
    await shipped(app, deal, buyer, lead.id, first=False)
    clock.set(NOON + 28 * DAY)  # past the first offer's time
    assert await app.followups.tick() is False
    assert not any(t.startswith("Пора пополнить запасы?") for t in bot_texts(sandbox, buyer.id))
    rows = [r for r in await followups(app, lead.id) if r.kind == "reorder"]
    assert [(r.state, r.due_at) for r in rows] == [("cancelled", NOON + 27 * DAY), ("pending", NOON + 37 * DAY)]  # rhythm 20 days
    assert rows[1].data["shipped"] == [NOON.isoformat(), (NOON + 20 * DAY).isoformat()]


async def test_not_now_offers_again_later(app: App, amocrm: AmoSandbox, sandbox: TelegramSandbox, buyer: Buyer, clock: FakeClock) -> None:
    lead, deal = await new_deal(app, amocrm, buyer)
    await shipped(app, deal, buyer, lead.id)
    offer = await offer_at(app, clock, sandbox, buyer, NOON + 27 * DAY)
    assert "Новинки" not in offer["text"]  # nothing new since the order
    buyer.click("Пока не нужно")
    assert (await buyer.reply())["text"] == "Хорошо, напомним позже."
    await eventually(lambda: any(t.startswith("⏸ Покупатель ответил «Пока не нужно»") and "11.01.2027" in t
                                 for t in bot_texts(sandbox, OPERATORS)))
    await eventually(lambda: any("Пока не нужно" in n["params"]["text"] for n in amocrm.account.find_notes(entity_ids=[deal.id])), timeout=15)
    assert amocrm.account.leads[deal.id]["status_id"] == deal.status("main_batch_sent")[0]  # the deal stays

    listed = [(row, who) for row, who in await upcoming(app.db) if row.kind == "reorder"]
    assert [line(row, who, "ru", MOSCOW).split(" · ", 1)[1] for row, who in listed] == [
        "11.01 12:01 · Анна Петрова · предложение повторного заказа"]  # REORDER_SNOOZE_DAYS 14
    again = await offer_at(app, clock, sandbox, buyer, NOON + 41 * DAY + timedelta(minutes=1))
    assert [text for text, _ in buttons(again)] == ["🔁 Повторить заказ", "Пока не нужно"]


async def crm_status(app: App, lead_id: int, status_id: int) -> bool:
    async with app.db() as session:
        return (await session.get(Lead, lead_id)).crm_status_id == status_id


async def outbox_idle(app: App, lead_id: int) -> bool:
    """All the lead's amoCRM operations are done."""
    async with app.db() as session:
        states = (await session.scalars(select(OutboxItem.state).where(OutboxItem.lead_id == lead_id))).all()
    return bool(states) and all(state == DONE for state in states)


@pytest.mark.parametrize("closed", [WON, LOST])
async def test_a_reorder_does_not_move_a_deal_closed_in_amocrm_but_the_manager_gets_the_task(
        app: App, amocrm: AmoSandbox, sandbox: TelegramSandbox, buyer: Buyer, clock: FakeClock, closed: int) -> None:
    lead, deal = await new_deal(app, amocrm, buyer)
    await shipped(app, deal, buyer, lead.id)
    pipeline = deal.status("main_batch_sent")[1]
    assert await amocrm.move_lead(deal.id, closed, pipeline) == [200]  # the manager closes the deal (won or lost)
    await eventually(lambda: crm_status(app, lead.id, closed))
    await offer_at(app, clock, sandbox, buyer, NOON + 27 * DAY)

    buyer.click("🔁 Повторить заказ")
    assert (await buyer.reply())["text"].startswith("Отлично! Передали менеджеру")
    await eventually(lambda: any(t["text"].startswith("Оформить повторный заказ") for t in amocrm.account.find_tasks(entity_ids=[deal.id])),
                     timeout=15)
    await eventually(lambda: outbox_idle(app, lead.id), timeout=15)  # the card's update went too
    assert (amocrm.account.leads[deal.id]["status_id"], amocrm.account.leads[deal.id]["pipeline_id"]) == (closed, pipeline)

