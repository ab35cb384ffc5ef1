"""The conversation of a topic reaches amoCRM as notes that say who wrote: the buyer's and the manager's names."""
from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.catalog.render import CatalogRenderer
from bot.db.models import Lead
from bot.journal import LEAD_CREATED
from bot.sandbox.amocrm import AmoSandbox
from bot.sandbox.telegram import TelegramSandbox
from tests import relay_support
from tests.buyer import Buyer
from tests.relay_support import (
    IVAN,
    OPERATORS,
    Team,
    eventually,
    known_lead,
    relay_settings,
    running,
)

team = relay_support.team  # managers acting in topics


@pytest.fixture
async def amocrm() -> AsyncIterator[AmoSandbox]:
    server = AmoSandbox(rate_limit=None)
    await server.start()
    yield server
    await server.close()


async def test_notes_name_the_buyer_and_the_manager(sandbox: TelegramSandbox, amocrm: AmoSandbox, database_url: str, tmp_path: Path,
                                                    renderer: CatalogRenderer, buyer: Buyer, team: Team) -> None:
    settings = relay_settings(sandbox, database_url, tmp_path, AMOCRM_BASE_URL=amocrm.base_url,
                              AMOCRM_ACCESS_TOKEN=amocrm.long_lived_token, AMOCRM_RPS=50)
    async with running(settings, renderer) as app:
        lead = await known_lead(app, buyer, crm_lead_id=None, responsible_user_id=None)
        async with app.db.begin() as session:  # a lead as the journey makes it: amoCRM gets it
            await app.journal.event(session, await session.get(Lead, lead.id), LEAD_CREATED, via="telegram")
        buyer.send("Скажите, работаете с ИП?")
        thread = await team.topic()
        await team.wait(thread, 2)
        team.say(IVAN, thread, "Да, работаем с ИП и ООО")
        team.say(IVAN, thread, "// уточнить объём")
        await buyer.replies(2)  # «thanks», then the answer

        async def crm_lead() -> int | None:
            async with app.db() as session:
                return (await session.execute(select(Lead.crm_lead_id))).scalar_one()

        def notes(crm_lead_id: int) -> list[str]:
            return [note["params"]["text"] for note in amocrm.account.find_notes(entity_ids=[crm_lead_id])]

        async def synced() -> bool:
            crm_lead_id = await crm_lead()
            return crm_lead_id is not None and any("уточнить объём" in text for text in notes(crm_lead_id))

        await eventually(synced, timeout=15)
        crm_lead_id = await crm_lead()
        texts = notes(crm_lead_id)
        buyer.send("И ещё вопрос")  # the card catches up with the lead: now it links to amoCRM
        await sandbox.wait_for_call("editMessageText", predicate=lambda call: call.chat_id == OPERATORS)
        card = team.bot_messages(thread)[0]
    assert any(text.startswith("Покупатель (Анна Петрова)") and "Скажите, работаете с ИП?" in text for text in texts)
    assert any(text.startswith("Менеджер (Иван Смирнов)") and "Да, работаем с ИП и ООО" in text for text in texts)
    assert any(text.startswith("Менеджер (Иван Смирнов)") and "(внутреннее)" in text and "уточнить объём" in text for text in texts)
    assert f"🗂 amoCRM: сделка №{crm_lead_id}" in card["text"]
    assert [e["url"] for e in card["entities"] if e["type"] == "text_link"] == [f"{amocrm.base_url}/leads/detail/{crm_lead_id}"]
