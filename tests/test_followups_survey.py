"""The survey after the test batch: FEEDBACK_SURVEY_DAYS after «Тестовая партия получена» the buyer rates it 1–5 and may say
what to change; amoCRM gets a note and the configured fields, a low rating an urgent task and a ping in the topic, and a
happy buyer without a main batch MAIN_BATCH_NUDGE_DAYS later a "propose the main batch" task."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.app import App
from bot.config import PACKAGE_DIR
from bot.sandbox.amocrm import AmoSandbox
from bot.sandbox.telegram import TelegramSandbox
from tests.buyer import Buyer, buttons
from tests.followups_support import (  # noqa: F401  (fixtures)
    app,
    bot_texts,
    buyer,
    clock,
    followups,
    new_deal,
    settled,
    started,
)
from tests.relay_support import OPERATORS, FakeClock, eventually

RATING, COMMENT = "Оценка тестовой партии", "Отзыв о тестовой партии"


@pytest.fixture
async def amocrm() -> Any:
    server = AmoSandbox(rate_limit=None)
    server.account.add_field("leads", RATING, "text")
    server.account.add_field("leads", COMMENT, "textarea")
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def extra_settings(tmp_path: Path) -> dict[str, Any]:
    """The rating and the comment go to amoCRM fields (they are off in the shipped CRM_CONFIG)."""
    crm = (PACKAGE_DIR / "crm" / "crm.yaml").read_text(encoding="utf-8")
    crm = crm.replace("test_batch_rating: null", f"test_batch_rating: {RATING}").replace("test_batch_comment: null", f"test_batch_comment: {COMMENT}")
    path = tmp_path / "crm.yaml"
    path.write_text(crm, encoding="utf-8")
    return {"CRM_CONFIG": path}


def field(amocrm: AmoSandbox, deal: int, name: str) -> str | None:
    found = [f["values"][0]["value"] for f in amocrm.account.leads[deal]["fields"] if f["field_name"] == name]
    return found[0] if found else None


def tasks(amocrm: AmoSandbox, deal: int) -> list[dict[str, Any]]:
    return amocrm.account.find_tasks(entity_ids=[deal])


async def survey(app: App, buyer: Buyer, clock: FakeClock, sandbox: TelegramSandbox, *lead_ids: int) -> dict[str, Any]:
    """Three days pass (once what is due now is done): the survey arrives with its five buttons."""
    for lead_id in lead_ids:
        await eventually(lambda: settled(app, lead_id))
    clock.set(clock() + timedelta(days=3, seconds=-60))
    assert await app.followups.tick() is False
    assert len(bot_texts(sandbox, buyer.id)) == 1  # only «Тестовая партия у вас»: not yet
    clock.set(clock() + timedelta(seconds=120))
    app.followups.wake.set()
    asked = await buyer.reply()
    assert asked["text"].startswith("Как вам тестовая партия?")
    assert [text for text, _ in buttons(asked)] == ["1", "2", "3", "4", "5"]
    return asked


async def test_a_low_rating_and_a_comment_reach_amocrm_and_the_manager(app: App, amocrm: AmoSandbox, sandbox: TelegramSandbox,
                                                                       buyer: Buyer, clock: FakeClock) -> None:
    manager = list(amocrm.account.users)[1]
    lead, deal = await new_deal(app, amocrm, buyer, responsible_user_id=manager)
    await deal.move("test_batch_received")
    assert "Тестовая партия у вас" in (await buyer.reply())["text"]
    asked = await survey(app, buyer, clock, sandbox, lead.id)

    buyer.click("2")
    question = await buyer.reply()
    assert question["text"].startswith("Спасибо! Что бы вы изменили")
    assert question["reply_markup"] == {"force_reply": True}
    rated = next(m for m in sandbox.messages(buyer.id, from_bot=True) if m["message_id"] == asked["message_id"])
    assert rated["text"] == "Как вам тестовая партия? Ваша оценка: ⭐⭐" and not buttons(rated)  # no second rating

    await eventually(lambda: field(amocrm, deal.id, RATING) == "2", timeout=15)
    await eventually(lambda: any("Срочно: низкая оценка тестовой партии (2 из 5)" in t["text"] for t in tasks(amocrm, deal.id)), timeout=15)
    urgent = next(t for t in tasks(amocrm, deal.id) if t["text"].startswith("Срочно"))
    assert urgent["responsible_user_id"] == manager and "Анна Петрова" in urgent["text"]
    await eventually(lambda: any(t.startswith("🔴 Низкая оценка тестовой партии: 2 из 5") for t in bot_texts(sandbox, OPERATORS)))

    sandbox.send_text(buyer.id, "Размеры <маломерят>, упаковка мятая", reply_to=question)
    assert (await buyer.reply())["text"] == "Спасибо! Мы передали ваш отзыв менеджеру."
    await eventually(lambda: field(amocrm, deal.id, COMMENT) == "Размеры <маломерят>, упаковка мятая", timeout=15)
    await eventually(lambda: any(t == "💬 Что бы покупатель изменил: Размеры <маломерят>, упаковка мятая"
                                 for t in bot_texts(sandbox, OPERATORS)))
    notes = [n["params"]["text"] for n in amocrm.account.find_notes(entity_ids=[deal.id])]
    assert any("оценка 2 из 5" in n for n in notes)
    await eventually(lambda: any("Размеры <маломерят>" in n["params"]["text"] for n in amocrm.account.find_notes(entity_ids=[deal.id])),
                     timeout=15)

    survey_row = next(r for r in await followups(app, lead.id) if r.kind == "survey")
    assert (survey_row.state, survey_row.data["rating"], survey_row.data["comment"]) == ("done", 2, "Размеры <маломерят>, упаковка мятая")
    assert not any(r.kind == "nudge" for r in await followups(app, lead.id))  # an unhappy buyer is the manager's now


async def test_a_happy_buyer_without_a_main_batch_gets_the_manager_a_task(app: App, amocrm: AmoSandbox, sandbox: TelegramSandbox,
                                                                          buyer: Buyer, clock: FakeClock) -> None:
    lead, deal = await new_deal(app, amocrm, buyer, responsible_user_id=list(amocrm.account.users)[1])
    other = started(sandbox, 1002, "Олег")
    other_lead, other_deal = await new_deal(app, amocrm, other, responsible_user_id=list(amocrm.account.users)[1])
    for d, b in ((deal, buyer), (other_deal, other)):
        await d.move("test_batch_received")
        await b.reply()
    await survey(app, buyer, clock, sandbox, lead.id, other_lead.id)
    await other.replies(1)
    buyer.click("5")
    other.click("4")
    await buyer.reply()
    await other.reply()
    assert not any(t["text"].startswith("Срочно") for t in tasks(amocrm, deal.id))
    await other_deal.move("main_batch_agreed")  # Oleg orders the main batch
    await other.reply()
    await eventually(lambda: settled(app, other_lead.id))

    clock.set(clock() + timedelta(days=7))
    app.followups.wake.set()
    await eventually(lambda: any(t["text"].startswith("Предложить основную партию: тестовую оценили на 5 из 5") for t in tasks(amocrm, deal.id)),
                     timeout=15)
    await eventually(lambda: settled(app, other_lead.id))
    nudges = {r.lead_id: (r.state, r.reason) for r in [*await followups(app, lead.id), *await followups(app, other_lead.id)] if r.kind == "nudge"}
    assert nudges == {lead.id: ("done", None), other_lead.id: ("skipped", "stale: the main batch is agreed")}
    assert not any(t["text"].startswith("Предложить основную партию") for t in tasks(amocrm, other_deal.id))
    await eventually(lambda: any(t.startswith("⏰ Тестовую партию оценили на 5 из 5") for t in bot_texts(sandbox, OPERATORS)))


async def test_a_rating_only_counts_from_its_buyer_and_once(app: App, amocrm: AmoSandbox, sandbox: TelegramSandbox, buyer: Buyer,
                                                            clock: FakeClock) -> None:
    lead, deal = await new_deal(app, amocrm, buyer)
    await deal.move("test_batch_received")
    await buyer.reply()
    asked = await survey(app, buyer, clock, sandbox, lead.id)
    row = next(r for r in await followups(app, lead.id) if r.kind == "survey")
    stranger = started(sandbox, 1003, "Чужой")
    assert await app.followups.survey.rate(stranger.id, row.id, 1, None) == ""  # someone else's survey
    assert await app.followups.survey.rate(buyer.id, row.id, 9, None) == ""  # not a rating
    sandbox.click(buyer.id, asked, buttons(asked)[3][1])
    await buyer.reply()
    assert await app.followups.survey.rate(buyer.id, row.id, 1, None) == "Спасибо, ваша оценка уже учтена."
    row = next(r for r in await followups(app, lead.id) if r.kind == "survey")
    assert row.data["rating"] == 4
