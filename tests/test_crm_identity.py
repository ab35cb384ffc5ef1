"""One buyer, one amoCRM deal: a website-quiz buyer who later opens the bot, or a buyer a manager already has in
amoCRM, ends up with one open deal and one contact, with the whole conversation on that deal (over HTTP, both sandboxes)."""
from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.app import App
from bot.catalog.render import CatalogRenderer
from bot.config import Settings
from bot.crm import cards
from bot.crm.models import DONE, MERGE, RETRY, UNFINISHED, OutboxItem
from bot.db.models import Lead, Message
from bot.journal import PHONE_SHARED
from bot.journey.identity import merge
from bot.phones import normalise_phone
from bot.sandbox.amocrm import AmoSandbox
from bot.sandbox.amocrm.account import LOST, WON
from bot.sandbox.telegram import TelegramSandbox
from tests.buyer import Buyer
from tests.conftest import SECRET, make_settings, running
from tests.crm_support import Env, amocrm, db, env, eventually  # noqa: F401  (fixtures)
from tests.test_journey_arrival import MARQUIZ as ARRIVAL_QUIZ, post_marquiz

PHONE = "+79123456789"
MARQUIZ = {**ARRIVAL_QUIZ, "contacts": {"name": "Анна Петрова", "phone": "79123456789", "email": "anna@opt.example"}}


@pytest.fixture
def settings(sandbox: TelegramSandbox, amocrm: AmoSandbox, database_url: str, tmp_path: Path) -> Settings:
    return make_settings(sandbox, database_url, tmp_path, AMOCRM_BASE_URL=amocrm.base_url,
                         AMOCRM_ACCESS_TOKEN=amocrm.long_lived_token, AMOCRM_RPS=50)


@pytest.fixture
async def app(settings: Settings, renderer: CatalogRenderer) -> AsyncIterator[App]:
    async with running(settings, renderer) as service:
        yield service


async def synced(app: App) -> bool:
    """Every CRM operation queued so far has been carried out."""
    await app.inbox.idle()
    async with app.db() as session:
        return not await session.scalar(select(func.count()).select_from(OutboxItem).where(OutboxItem.state.in_(UNFINISHED)))


async def lead_of(app: App, buyer: Buyer) -> Lead:
    async with app.db() as session:
        return (await session.execute(select(Lead).where(Lead.tg_user_id == buyer.id))).scalar_one()


def open_deals(amocrm: AmoSandbox) -> list[dict[str, Any]]:
    return [deal for deal in amocrm.account.leads.values() if deal["status_id"] not in (WON, LOST)]


def contacts_with(amocrm: AmoSandbox, phone: str) -> list[int]:
    return [contact_id for contact_id in amocrm.account.contacts
            if phone in {normalise_phone(value) for value in amocrm.account.contact_phones(contact_id)}]


def notes(amocrm: AmoSandbox, deal_id: int) -> list[str]:
    return [note["params"]["text"] for note in amocrm.account.find_notes(entity_ids=[deal_id])]


async def assert_conversation_on(app: App, amocrm: AmoSandbox, lead: Lead, deal_id: int) -> None:
    """Every message of the buyer's conversation is a note on the deal, in order, none twice."""
    async with app.db() as session:
        messages = (await session.execute(select(Message).where(Message.lead_id == lead.id).order_by(Message.id))).scalars().all()
    expected = [app.crm.composer.message_note(message) for message in messages]
    texts = [text.rsplit("\n", 1)[0] for text in notes(amocrm, deal_id)]  # without the trailing «#ob…» marker
    assert [text for text in texts if text in set(expected)] == expected
    markers = [text.rsplit("\n", 1)[1] for text in notes(amocrm, deal_id)]
    assert len(markers) == len(set(markers))


async def cold_start_then_share_phone(app: App, amocrm: AmoSandbox, buyer: Buyer, deals_before: int) -> int:
    """A plain ``/start``; once amoCRM has the bot's deal, the buyer shares their own phone. Returns that deal's id."""
    buyer.send("/start")
    await buyer.replies(2)
    await eventually(lambda: len(amocrm.account.leads) == deals_before + 1, timeout=15)
    bot_deal = max(amocrm.account.leads)
    buyer.share_phone("+7 912 345-67-89")
    return bot_deal


async def test_a_quiz_buyer_who_opens_the_bot_cold_keeps_one_deal_and_one_contact(app: App, amocrm: AmoSandbox, buyer: Buyer) -> None:
    assert (await post_marquiz(app, MARQUIZ)).status_code == 200
    await eventually(lambda: len(amocrm.account.leads) == 1, timeout=15)
    quiz_deal = next(iter(amocrm.account.leads))

    bot_deal = await cold_start_then_share_phone(app, amocrm, buyer, 1)
    found, greeting = await buyer.replies(2)
    assert "Нашёл вашу заявку" in found["text"] and greeting["text"].startswith("Анна, здравствуйте!")
    await eventually(lambda: synced(app), timeout=15)

    account = amocrm.account
    assert [deal["id"] for deal in open_deals(amocrm)] == [quiz_deal]  # the earlier, richer deal survives
    assert contacts_with(amocrm, PHONE) == account.leads[quiz_deal]["contacts"]
    lead = await lead_of(app, buyer)
    assert (lead.crm_lead_id, lead.crm_contact_id) == (quiz_deal, account.leads[quiz_deal]["contacts"][0])
    assert account.status_name(account.leads[quiz_deal]["status_id"]) == "Квалификация пройдена"
    assert account.lead_fields(quiz_deal)["Категория"] == ["Обувь"]
    assert account.lead_fields(quiz_deal)["Telegram"] == ["@anna_opt (id 1001)"]

    closed = account.leads[bot_deal]
    assert closed["status_id"] == LOST and closed["loss_reason_id"] == account.loss_reason_id("Дубль")
    assert any(f"№{quiz_deal}" in text for text in notes(amocrm, bot_deal))
    assert any(f"№{bot_deal}" in text for text in notes(amocrm, quiz_deal))
    assert any(text.startswith("Квиз пройден") for text in notes(amocrm, quiz_deal))
    await assert_conversation_on(app, amocrm, lead, quiz_deal)


async def test_the_webhook_closing_a_duplicate_never_moves_the_buyer_to_lost(app: App, amocrm: AmoSandbox, buyer: Buyer) -> None:
    """amoCRM tells the service (by webhook) that the bot's duplicate deal is now lost: the buyer's lead stays on the kept deal."""
    amocrm.webhook_urls = [f"http://127.0.0.1:{app.http_port}/webhooks/amocrm/{SECRET}"]
    assert (await post_marquiz(app, MARQUIZ)).status_code == 200
    await eventually(lambda: len(amocrm.account.leads) == 1, timeout=15)
    quiz_deal = next(iter(amocrm.account.leads))
    bot_deal = await cold_start_then_share_phone(app, amocrm, buyer, 1)
    before = amocrm.account.leads[bot_deal]["status_id"], amocrm.account.leads[bot_deal]["pipeline_id"]
    await buyer.replies(2)
    await eventually(lambda: synced(app), timeout=15)
    assert amocrm.account.leads[bot_deal]["status_id"] == LOST

    assert await amocrm.notify_status(bot_deal, *before) == [200]  # the closing's webhook
    await eventually(lambda: synced(app), timeout=15)
    lead = await lead_of(app, buyer)
    async with app.db() as session:
        stages = (await session.scalars(select(Lead.stage))).all()
    assert (lead.crm_lead_id, lead.crm_status_id) == (quiz_deal, amocrm.account.leads[quiz_deal]["status_id"])
    assert lead.stage == "qualified" and "lost" not in stages


async def test_a_buyer_a_manager_already_has_joins_that_contact_and_its_open_deal(app: App, amocrm: AmoSandbox, buyer: Buyer) -> None:
    account = amocrm.account
    [manual] = account.add_contacts([{"name": "Анна (опт)", "custom_fields_values": [
        {"field_code": "PHONE", "values": [{"value": "8 (912) 345-67-89", "enum_code": "WORK"}]}]}])
    [deal] = account.add_leads([{"name": "Анна — весенний заказ", "_embedded": {"contacts": [{"id": manual["id"]}]}}])

    bot_deal = await cold_start_then_share_phone(app, amocrm, buyer, 1)
    await buyer.reply()
    await eventually(lambda: synced(app), timeout=15)

    assert [d["id"] for d in open_deals(amocrm)] == [deal["id"]]
    assert contacts_with(amocrm, PHONE) == [manual["id"]] and len(account.contacts) == 1
    lead = await lead_of(app, buyer)
    assert (lead.crm_lead_id, lead.crm_contact_id) == (deal["id"], manual["id"])
    assert account.leads[deal["id"]]["name"] == "Анна — весенний заказ"  # a manager's deal keeps its name
    assert account.leads[bot_deal]["status_id"] == LOST
    await assert_conversation_on(app, amocrm, lead, deal["id"])


async def test_a_buyer_whose_contact_has_no_open_deal_gets_that_contact_on_the_bot_deal(app: App, amocrm: AmoSandbox, buyer: Buyer) -> None:
    account = amocrm.account
    [manual] = account.add_contacts([{"name": "Анна", "custom_fields_values": [
        {"field_code": "PHONE", "values": [{"value": "+7 912 345 67 89", "enum_code": "MOB"}]}]}])

    bot_deal = await cold_start_then_share_phone(app, amocrm, buyer, 0)
    await buyer.reply()
    await eventually(lambda: synced(app), timeout=15)

    assert [d["id"] for d in open_deals(amocrm)] == [bot_deal]
    assert list(account.contacts) == [manual["id"]] and account.leads[bot_deal]["contacts"] == [manual["id"]]
    assert (await lead_of(app, buyer)).crm_contact_id == manual["id"]


# ------------------------------------------------------------------ the sync alone
async def two_deals_then_merge(env: Env) -> tuple[int, int, Lead]:
    """A website lead and a Telegram lead, both already in amoCRM, merged as the journey merges them."""
    website = await env.new_lead(first_name="Анна", phone=PHONE)
    await env.drain()
    telegram = await env.new_lead(tg_user_id=41, first_name="Аня")
    await env.say(telegram.id, "здравствуйте")
    await env.drain()
    deals = (await env.lead(website.id)).crm_lead_id or 0, (await env.lead(telegram.id)).crm_lead_id or 0
    async with env.db.begin() as session:
        survivor, other = await session.get(Lead, telegram.id), await session.get(Lead, website.id)
        await merge(session, env.journal, survivor, other)
    await env.say(telegram.id, "после объединения")
    return *deals, telegram


async def test_a_merge_cut_short_by_amocrm_is_finished_later_without_doing_anything_twice(env: Env) -> None:
    website_deal, telegram_deal, lead = await two_deals_then_merge(env)
    env.sandbox.inject(502, path="/api/v4/leads/notes", method="POST", after=True)  # the copies land, the answer is lost
    await env.drain()
    [job] = await env.items(op=MERGE)
    assert job.state == RETRY
    env.sandbox.inject(503, times=3, path="/api/v4/leads", method="PATCH")  # then amoCRM is down just before the closing
    env.clock.advance(2)
    await env.drain()
    assert (await env.lead(lead.id)).crm_lead_id == website_deal  # already on the kept deal…
    assert env.sandbox.account.leads[telegram_deal]["status_id"] not in (WON, LOST)  # …the duplicate not closed yet
    env.clock.advance(4)
    await env.drain()

    assert {item.state for item in await env.items()} == {DONE}
    account = env.sandbox.account
    assert account.leads[telegram_deal]["status_id"] == LOST
    texts = notes(env.sandbox, website_deal)
    assert [text.split("\n")[1] for text in texts if text.startswith("Покупатель")] == ["здравствуйте", "после объединения"]
    assert len([text for text in texts if text.startswith("Тот же покупатель")]) == 1
    assert len([text for text in notes(env.sandbox, telegram_deal) if text.startswith("Закрыта как дубль")]) == 1
    markers = [text.rsplit("\n", 1)[1] for text in texts]
    assert len(markers) == len(set(markers))


async def test_a_managers_later_deal_is_never_closed(env: Env) -> None:
    lead = await env.new_lead(tg_user_id=42, first_name="Аня")
    await env.drain()
    bot_deal = (await env.lead(lead.id)).crm_lead_id
    account = env.sandbox.account
    [contact] = account.add_contacts([{"name": "Анна", "custom_fields_values": [
        {"field_code": "PHONE", "values": [{"value": PHONE, "enum_code": "WORK"}]}]}])
    [later] = account.add_leads([{"name": "Заказ от менеджера", "_embedded": {"contacts": [{"id": contact["id"]}]}}])

    async with env.db.begin() as session:
        fresh = await session.get(Lead, lead.id)
        fresh.phone = PHONE
        await env.journal.event(session, fresh, PHONE_SHARED, phone=PHONE)
    await env.drain()

    assert {deal["id"] for deal in open_deals(env.sandbox)} == {bot_deal, later["id"]}  # the bot's deal is the earlier one
    assert (await env.lead(lead.id)).crm_contact_id == contact["id"] and account.leads[bot_deal]["contacts"] == [contact["id"]]


async def test_a_closed_duplicates_tasks_move_to_the_kept_deal(env: Env) -> None:
    website = await env.new_lead(first_name="Анна", phone=PHONE)
    await env.drain()
    telegram = await env.new_lead(tg_user_id=43, first_name="Аня")
    await env.event(telegram.id, "question_asked", text="Есть 46 размер?")
    await env.drain()
    website_deal = (await env.lead(website.id)).crm_lead_id
    async with env.db.begin() as session:
        await merge(session, env.journal, await session.get(Lead, telegram.id), await session.get(Lead, website.id))
    await env.drain()

    assert (await env.lead(telegram.id)).crm_lead_id == website_deal
    [task] = env.sandbox.account.find_tasks()
    assert task["entity_id"] == website_deal and not task["is_completed"]


async def test_without_the_duplicate_loss_reason_the_duplicate_closes_without_one_and_the_sync_goes_on(
        settings: Settings, renderer: CatalogRenderer, amocrm: AmoSandbox, buyer: Buyer) -> None:
    account = amocrm.account
    del account.loss_reasons[account.loss_reason_id("Дубль")]
    async with running(settings, renderer) as app:
        assert (await post_marquiz(app, MARQUIZ)).status_code == 200
        await eventually(lambda: len(account.leads) == 1, timeout=15)
        quiz_deal = next(iter(account.leads))

        bot_deal = await cold_start_then_share_phone(app, amocrm, buyer, 1)
        await buyer.replies(2)
        await eventually(lambda: synced(app), timeout=15)

        assert [deal["id"] for deal in open_deals(amocrm)] == [quiz_deal]
        closed = account.leads[bot_deal]
        assert closed["status_id"] == LOST and closed.get("loss_reason_id") is None
        await assert_conversation_on(app, amocrm, await lead_of(app, buyer), quiz_deal)


def test_a_phone_only_typed_in_the_bot_finds_no_amocrm_contact() -> None:
    """Anyone can type anyone's number: the deal of a buyer who typed one must not join that person's contact."""
    contact = {"custom_fields_values": [{"field_code": "PHONE", "values": [{"value": "8 (912) 345-67-89"}]}]}
    shared, typed = Lead(phone=PHONE, phone_typed=False), Lead(phone=PHONE, phone_typed=True)
    assert cards.contact_query(shared) == "9123456789" and cards.is_buyer(contact, shared)
    assert cards.contact_query(typed) is None and not cards.is_buyer(contact, typed)
    with_email = Lead(phone=PHONE, phone_typed=True, email="anna@opt.example")
    assert cards.contact_query(with_email) == "anna@opt.example"
