"""Data a stage requires: on «Основная партия согласована» the buyer is asked, one reply at a time, for what the bot does
not know (delivery city, company, INN, phone); a bad INN or phone is asked again saying what is wrong; when all is in,
amoCRM gets a note and the configured fields and the managers are told in the topic."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.app import App
from bot.config import PACKAGE_DIR
from bot.db.models import Lead
from bot.followups.required import checked, valid_inn
from bot.sandbox.amocrm import AmoSandbox
from bot.sandbox.telegram import TelegramSandbox
from tests.buyer import Buyer
from tests.followups_support import app, bot_texts, buyer, clock, followups, new_deal, settled  # noqa: F401  (fixtures)
from tests.relay_support import OPERATORS, eventually

INN_FIELD = "ИНН"


@pytest.fixture
async def amocrm() -> Any:
    server = AmoSandbox(rate_limit=None)
    server.account.add_field("leads", INN_FIELD, "text")
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def extra_settings(tmp_path: Path) -> dict[str, Any]:
    crm = (PACKAGE_DIR / "crm" / "crm.yaml").read_text(encoding="utf-8").replace("  inn: null", f"  inn: {INN_FIELD}")
    path = tmp_path / "crm.yaml"
    path.write_text(crm, encoding="utf-8")
    return {"CRM_CONFIG": path}


async def answer(sandbox: TelegramSandbox, buyer: Buyer, question: dict[str, Any], text: str) -> dict[str, Any]:
    assert question["reply_markup"] == {"force_reply": True}
    sandbox.send_text(buyer.id, text, reply_to=question)
    return await buyer.reply()


async def test_the_buyer_is_asked_for_what_is_missing_and_bad_answers_are_explained(
        app: App, amocrm: AmoSandbox, sandbox: TelegramSandbox, buyer: Buyer) -> None:
    lead, deal = await new_deal(app, amocrm, buyer, company=None, phone=None, interests={"category": ["shoes"]})
    await deal.move("main_batch_agreed")
    agreed, question = await buyer.replies(2)
    assert agreed["text"].startswith("Основная партия согласована")
    assert question["text"] == "Для отправки напишите, пожалуйста, город доставки — ответом на это сообщение."

    question = await answer(sandbox, buyer, question, "Нижний Новгород")
    assert question["text"].startswith("Как называется ваша компания")
    question = await answer(sandbox, buyer, question, "ООО «Ромашка» <опт>")
    assert question["text"].startswith("Пришлите, пожалуйста, ИНН")
    question = await answer(sandbox, buyer, question, "7707083894")  # one digit off
    assert question["text"].splitlines() == [
        "❌ Это не ИНН: нужно 10 цифр (организация) или 12 (ИП), и контрольные цифры должны сходиться. Проверьте, пожалуйста.",
        "Пришлите, пожалуйста, ИНН — 10 цифр у организации, 12 у ИП — ответом на это сообщение."]
    question = await answer(sandbox, buyer, question, "7707 083 893")
    assert question["text"].startswith("Оставьте, пожалуйста, контактный телефон")
    question = await answer(sandbox, buyer, question, "12-34")
    assert question["text"].startswith("❌ Не получилось прочитать номер. Напишите его с кодом, например +7 999 123-45-67.")
    thanks = await answer(sandbox, buyer, question, "8 (999) 123-45-67")
    assert thanks["text"] == "Спасибо, всё получили! Менеджер подготовит отправку."

    await eventually(lambda: any(t.startswith("✅ Покупатель прислал данные для отправки") for t in bot_texts(sandbox, OPERATORS)))
    told = next(t for t in bot_texts(sandbox, OPERATORS) if t.startswith("✅ Покупатель прислал"))
    assert told.splitlines()[1:] == ["Город: Нижний Новгород", "Компания: ООО «Ромашка» <опт>", "ИНН: 7707083893", "Телефон: +79991234567"]

    def inn() -> str | None:
        return next((f["values"][0]["value"] for f in amocrm.account.leads[deal.id]["fields"] if f["field_name"] == INN_FIELD), None)

    await eventually(lambda: inn() == "7707083893", timeout=15)
    await eventually(lambda: any("Покупатель прислал данные для отправки" in n["params"]["text"] and "ИНН: 7707083893" in n["params"]["text"]
                                 and "+79991234567" in n["params"]["text"] for n in amocrm.account.find_notes(entity_ids=[deal.id])), timeout=15)
    async with app.db() as session:
        assert (await session.get(Lead, lead.id)).phone is None  # a typed phone never becomes the lead's phone
    assert [r.kind for r in await followups(app, lead.id)] == ["stage", "ask"]


async def test_only_what_is_missing_is_asked(app: App, amocrm: AmoSandbox, sandbox: TelegramSandbox, buyer: Buyer) -> None:
    lead, deal = await new_deal(app, amocrm, buyer)  # city from the quiz, the company and the phone are known
    await deal.move("main_batch_agreed")
    _, question = await buyer.replies(2)
    assert question["text"].startswith("Пришлите, пожалуйста, ИНН")
    assert (await answer(sandbox, buyer, question, "500100732259"))["text"].startswith("Спасибо, всё получили!")
    await eventually(lambda: settled(app, lead.id))
    told = await eventually_text(sandbox, "✅ Покупатель прислал")
    assert "Город: Казань" in told and "Компания: ИП Петрова" in told and "ИНН: 500100732259" in told


async def eventually_text(sandbox: TelegramSandbox, prefix: str) -> str:
    await eventually(lambda: any(t.startswith(prefix) for t in bot_texts(sandbox, OPERATORS)))
    return next(t for t in bot_texts(sandbox, OPERATORS) if t.startswith(prefix))


@pytest.mark.parametrize("inn, ok", [("7707083893", True), ("500100732259", True), ("7707083894", False), ("500100732258", False),
                                     ("770708389", False), ("77070838930", False), ("７７０７０８３８９３", False), ("abcdefghij", False)])
def test_inn_checksum(inn: str, ok: bool) -> None:
    assert valid_inn(inn) is ok


def test_answers_are_checked() -> None:
    assert checked("phone", "+7 999 123 45 67") == "+79991234567" and checked("phone", "дом") is None
    assert checked("inn", " 7707 083 893 ") == "7707083893"
    assert checked("city", "  Казань ") == "Казань" and checked("city", "x") is None and checked("company", "я" * 201) is None
