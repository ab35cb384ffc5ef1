"""What reaches amoCRM: lead cards, contacts, notes, stages, tasks (driven over HTTP against the sandbox)."""
from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from bot.bodies import JSON, Body, parse_json
from bot.crm.checks import Checks
from bot.crm.models import DONE, FAILED, PENDING
from bot.db.models import Message
from bot.journal import (
    CALLBACK_REQUESTED,
    CATALOG_SENT,
    PHONE_SHARED,
    QUESTION_ASKED,
    QUIZ_COMPLETED,
    SLA_BREACHED,
    STAGE_CHANGED,
    TEST_BATCH_REQUESTED,
)
from bot.journey.intake import IntakeService
from bot.sandbox.amocrm.account import WON
from tests.crm_support import QUIZ, Env, FakeClock, amocrm, db, env, make_env, open_db  # noqa: F401  (fixtures)

MARQUIZ = {
    "contacts": {"name": "Анна Петрова", "phone": "79994445566", "email": "anna@example.com"},
    "quiz": {"id": "65f0c0ffee0000000000abcd", "name": "Опт"},
    "answers": [
        {"q": "Какая категория товаров вас интересует?", "a": ["Женская одежда", "Обувь"]},
        {"q": "Какой объём закупки планируете?", "a": "100–300 тыс ₽"},
        {"q": "Где вы продаёте?", "a": "Маркетплейсы"},
        {"q": "Ваш город доставки?", "a": "Казань"},
        {"q": "Как вы о нас узнали?", "a": "От коллег"},
    ],
    "extra": {"utm": {"source": "yandex", "medium": "cpc", "name": "shoes"}},
    "created": "2026-11-26T10:00:00.000Z",
}


async def marquiz(env: Env, payload: dict = MARQUIZ) -> int:
    intake = IntakeService(env.db, env.journal, QUIZ, "ru")
    raw = json.dumps(payload).encode()
    return (await intake.accept_marquiz(Body(raw, JSON, parse_json(raw)))).lead_id


async def test_quiz_lead_reaches_amocrm_with_contact_every_field_and_the_answers(env: Env) -> None:
    lead_id = await marquiz(env)
    await env.drain()

    lead = await env.lead(lead_id)
    account = env.sandbox.account
    card = account.leads[lead.crm_lead_id]
    assert card["name"].endswith(f"#L{lead_id}") and "Анна Петрова" in card["name"]
    assert (card["pipeline_id"], card["status_id"]) == (lead.crm_pipeline_id, lead.crm_status_id)
    assert account.status_name(card["status_id"]) == "Квалификация пройдена"
    assert account.lead_fields(card["id"]) == {
        "Категория": ["Женская одежда", "Обувь"], "Объём закупки": ["100–300 тыс ₽"], "Канал продаж": ["Маркетплейсы"],
        "Город": ["Казань"], "Источник": ["yandex / cpc / shoes"],
    }
    assert {t["name"] for t in card["tags"]} == {"Telegram-бот"}
    assert card["contacts"] == [lead.crm_contact_id]
    assert account.contact_phones(lead.crm_contact_id) == ["+79994445566"]
    assert account.contacts[lead.crm_contact_id]["name"] == "Анна Петрова"
    [note] = env.notes(card["id"])
    assert "Квиз пройден" in note and "• Как вы о нас узнали? — От коллег" in note and "Женская одежда, Обувь" in note
    assert env.sandbox.count(path="/api/v4/leads/complex") == 1  # both card items were one creation


async def test_in_bot_lead_gets_telegram_field_then_quiz_fields_and_stage(env: Env) -> None:
    lead = await env.new_lead(tg_user_id=5001, tg_username="anna_opt", first_name="Анна")
    await env.drain()
    crm_id = (await env.lead(lead.id)).crm_lead_id
    assert env.sandbox.account.lead_fields(crm_id) == {"Telegram": ["@anna_opt (id 5001)"]}
    assert env.sandbox.account.status_name(env.sandbox.account.leads[crm_id]["status_id"]) == "Новая заявка"

    async with env.db.begin() as session:
        fresh = await session.get(type(lead), lead.id)
        fresh.interests = {"category": ["kids"], "volume": "over1m", "channel": "own_store", "city": "Пермь"}
        await env.journal.event(session, fresh, QUIZ_COMPLETED, via="telegram", interests=fresh.interests)
    await env.drain()

    card = env.sandbox.account.leads[crm_id]
    assert env.sandbox.account.status_name(card["status_id"]) == "Квалификация пройдена"
    assert env.sandbox.account.lead_fields(crm_id)["Категория"] == ["Детская одежда"]
    assert env.sandbox.account.lead_fields(crm_id)["Объём закупки"] == ["более 1 млн ₽"]
    assert "• Ваш город доставки? — Пермь" in env.notes(crm_id)[0]
    assert len(env.sandbox.account.leads) == 1


async def test_a_known_phone_reuses_the_contact_and_its_open_lead(env: Env) -> None:
    account = env.sandbox.account
    contact = account.add_contacts([{"name": "Анна", "custom_fields_values": [
        {"field_code": "PHONE", "values": [{"value": "8 (999) 444-55-66", "enum_code": "WORK"}]}]}])[0]["id"]
    old = account.add_leads([{"name": "Старая сделка", "_embedded": {"contacts": [{"id": contact}]}}])[0]["id"]

    lead_id = await marquiz(env)
    await env.drain()

    lead = await env.lead(lead_id)
    assert (lead.crm_lead_id, lead.crm_contact_id) == (old, contact)
    assert len(account.leads) == 1 and len(account.contacts) == 1
    assert account.lead_fields(old)["Город"] == ["Казань"]
    assert account.status_name(account.leads[old]["status_id"]) == "Квалификация пройдена"


async def test_a_known_phone_with_only_closed_deals_gets_a_new_lead_on_the_same_contact(env: Env) -> None:
    account = env.sandbox.account
    contact = account.add_contacts([{"name": "Анна", "custom_fields_values": [
        {"field_code": "PHONE", "values": [{"value": "+7 999 444 55 66", "enum_code": "MOB"}]}]}])[0]["id"]
    pipeline = next(iter(account.pipelines))
    account.add_leads([{"name": "Прошлая", "status_id": WON, "pipeline_id": pipeline, "_embedded": {"contacts": [{"id": contact}]}}])
    account.add_contacts([{"name": "Не тот", "custom_fields_values": [
        {"field_code": "PHONE", "values": [{"value": "+7 999 444 55 67", "enum_code": "MOB"}]}]}])

    lead = await env.lead(await marquiz(env))
    await env.drain()
    lead = await env.lead(lead.id)

    assert lead.crm_contact_id == contact and len(account.leads) == 2 and len(account.contacts) == 2
    assert account.leads[lead.crm_lead_id]["contacts"] == [contact]


async def test_a_whole_conversation_becomes_notes_in_order_exactly_once(env: Env) -> None:
    lead = await env.new_lead(tg_user_id=7, first_name="Анна")
    lines = [("buyer", f"вопрос {i}") if i % 2 == 0 else ("bot", f"ответ {i}") for i in range(30)]
    for author, text in lines[:10]:
        await env.say(lead.id, text, author)
    await env.drain()
    for author, text in lines[10:]:
        await env.say(lead.id, text, author)
    await env.say(lead.id, "Менеджер на связи", "manager")
    await env.drain()
    await env.drain()

    notes = env.notes((await env.lead(lead.id)).crm_lead_id)
    assert [n.split("\n")[1] for n in notes] == [text for _, text in lines] + ["Менеджер на связи"]
    assert notes[0].startswith("Покупатель (Анна), ") and notes[1].startswith("Бот, ") and notes[-1].startswith("Менеджер, ")
    assert all(n.split("\n")[-1].startswith("#ob") for n in notes)
    assert {i.state for i in await env.items()} == {DONE}


async def test_funnel_events_move_the_lead_forward_only_and_create_tasks(env: Env) -> None:
    lead = await env.new_lead(tg_user_id=8, first_name="Олег", phone="+79990001122")
    await env.event(lead.id, CATALOG_SENT)
    await env.event(lead.id, CALLBACK_REQUESTED, phone="+79990001122")
    await env.event(lead.id, TEST_BATCH_REQUESTED, assortment="платья 40 шт", city="Казань", phone="+79990001122")
    await env.event(lead.id, QUESTION_ASKED, text="А есть размер 56?")
    await env.event(lead.id, QUESTION_ASKED, text="И ещё вопрос")  # the same waiting period: no second task
    await env.drain()

    crm_id = (await env.lead(lead.id)).crm_lead_id
    account = env.sandbox.account
    assert account.status_name(account.leads[crm_id]["status_id"]) == "Каталог отправлен"
    now = int(env.clock().timestamp())
    tasks = {t["text"].rsplit(" #ob", 1)[0]: t["complete_till"] - now for t in account.find_tasks(entity_ids=[crm_id])}
    assert tasks == {
        "Узнать впечатление о каталоге. Покупатель: Олег": 120 * 60,
        "Перезвонить. Покупатель: Олег, +79990001122": 15 * 60,
        "Тестовая партия: платья 40 шт; Казань; +79990001122. Покупатель: Олег": 30 * 60,
        "Ответить на вопрос в Telegram: «А есть размер 56?». Покупатель: Олег": 10 * 60,
    }
    assert all(t["responsible_user_id"] == account.leads[crm_id]["responsible_user_id"] for t in account.find_tasks())
    notes = env.notes(crm_id)
    assert notes[0].startswith("Покупатель просит перезвонить: +79990001122")
    assert notes[1].startswith("Заявка на тестовую партию\nАссортимент: платья 40 шт")

    await env.event(lead.id, QUIZ_COMPLETED, via="telegram", interests={})  # «qualified» is behind «catalog sent»
    await env.drain()
    assert account.status_name(account.leads[crm_id]["status_id"]) == "Каталог отправлен"


async def test_operator_chat_events_assign_sla_tasks_and_apply_the_chosen_stage(env: Env) -> None:
    lead = await env.new_lead(tg_user_id=9, first_name="Ирина")
    await env.event(lead.id, CATALOG_SENT)
    await env.drain()
    account = env.sandbox.account
    manager, head = account.add_user("Иван Смирнов"), account.add_user("Ольга Кузнецова")
    crm_id = (await env.lead(lead.id)).crm_lead_id

    await env.event(lead.id, SLA_BREACHED, level=1, minutes=5, manager="Иван Смирнов", responsible_user_id=manager)
    await env.event(lead.id, SLA_BREACHED, level=1, minutes=5, manager="Иван Смирнов", responsible_user_id=manager)  # once
    await env.event(lead.id, SLA_BREACHED, level=2, minutes=15, manager="Ольга Кузнецова", responsible_user_id=head)
    await env.event(lead.id, STAGE_CHANGED, stage="qualified", previous="catalog_sent", manager="Иван Смирнов")
    await env.drain()

    sla = [t for t in account.find_tasks(entity_ids=[crm_id]) if "ответа ждут" in t["text"]]
    assert sorted((t["responsible_user_id"], t["text"].rsplit(" #ob", 1)[0]) for t in sla) == sorted([
        (manager, "Ответить в Telegram, в топике покупателя: ответа ждут уже 5 мин. Покупатель: Ирина"),
        (head, "Ответить в Telegram, в топике покупателя: ответа ждут уже 15 мин. Покупатель: Ирина"),
    ])
    assert account.status_name(account.leads[crm_id]["status_id"]) == "Квалификация пройдена"  # back, as the manager chose


async def test_a_shared_phone_is_added_to_the_contact(env: Env) -> None:
    lead = await env.new_lead(tg_user_id=9, first_name="Ира")
    await env.drain()
    async with env.db.begin() as session:
        fresh = await session.get(type(lead), lead.id)
        fresh.phone = "+79161234567"
        await env.journal.event(session, fresh, PHONE_SHARED, phone=fresh.phone)
    await env.drain()
    contact_id = (await env.lead(lead.id)).crm_contact_id
    assert env.sandbox.account.contact_phones(contact_id) == ["+79161234567"]


async def test_every_open_lead_gets_a_task_when_amocrm_shows_none(env: Env) -> None:
    busy = await env.new_lead(tg_user_id=10, first_name="Занятой", phone="+79990000001")
    idle = await env.new_lead(tg_user_id=11, first_name="Тихий")
    closed = await env.new_lead(tg_user_id=12, first_name="Закрытый", stage="won")
    await env.event(busy.id, CALLBACK_REQUESTED, phone="+79990000001")
    await env.drain()
    checks: Checks = env.crm.checks

    assert await checks.ensure_tasks() == 1
    assert await checks.ensure_tasks() == 0  # already queued
    await env.drain()
    idle_crm = (await env.lead(idle.id)).crm_lead_id
    [task] = env.sandbox.account.find_tasks(entity_ids=[idle_crm])
    assert task["text"].startswith("Связаться с покупателем: у сделки не было открытой задачи. Покупатель: Тихий") and not task["is_completed"]
    assert await checks.ensure_tasks() == 0  # amoCRM shows it now
    closed_crm = (await env.lead(closed.id)).crm_lead_id
    assert env.sandbox.account.find_tasks(entity_ids=[closed_crm]) == []

    for crm_id in ((await env.lead(busy.id)).crm_lead_id, idle_crm):
        env.sandbox.complete_tasks(crm_id)
    env.clock.advance(3601)
    assert await checks.ensure_tasks() == 2
    await env.drain()
    assert len(env.sandbox.account.find_tasks(is_completed=False)) == 2


async def test_two_instances_checking_at_once_queue_one_task_per_lead_without_one(env: Env, database_url: str) -> None:
    """Every instance runs the «no deal without a task» check on its own schedule: run together, they queue one
    task for a bare deal, and one again once its task is done and the deal is bare anew."""
    other_db = await open_db(database_url)
    other = await make_env(other_db, database_url, env.sandbox, clock=env.clock)
    try:
        lead = await env.new_lead(tg_user_id=15, first_name="Тихий")
        await env.drain()
        crm_id = (await env.lead(lead.id)).crm_lead_id
        for _ in range(2):
            queued = await asyncio.gather(env.crm.checks.ensure_tasks(), other.crm.checks.ensure_tasks())
            assert sorted(queued) == [0, 1]
            await env.drain()
            assert len(env.sandbox.account.find_tasks(entity_ids=[crm_id], is_completed=False)) == 1
            env.sandbox.complete_tasks(crm_id)
            env.clock.advance(3601)
        assert len(env.sandbox.account.find_tasks(entity_ids=[crm_id])) == 2
    finally:
        await other.crm.close()
        await other_db.close()


async def test_a_refused_item_fails_with_amocrm_reason_and_does_not_block_the_rest(env: Env) -> None:
    first = await env.new_lead(tg_user_id=13, first_name="Первый")
    second = await env.new_lead(tg_user_id=14, first_name="Второй")
    await env.drain()
    gone = (await env.lead(second.id)).crm_lead_id
    del env.sandbox.account.leads[gone]  # a manager deleted the deal: amoCRM refuses notes on it
    await env.say(first.id, "первое")
    await env.say(second.id, "в никуда")
    await env.say(first.id, "второе")
    await env.drain()

    [failed] = await env.items(state=FAILED)
    assert failed.lead_id == second.id and failed.last_error == "NotFound at entity_id: Entity not found"
    assert [n.split("\n")[1] for n in env.notes((await env.lead(first.id)).crm_lead_id)] == ["первое", "второе"]
    assert await env.items(state=PENDING) == []
    assert env.sandbox.count(400) == 1  # the others went again at once, in the same round


async def test_done_items_are_deleted_after_7_days_and_failed_ones_never(env: Env) -> None:
    kept = await env.new_lead(tg_user_id=13, first_name="Первый")
    refused = await env.new_lead(tg_user_id=14, first_name="Второй")
    await env.drain()
    del env.sandbox.account.leads[(await env.lead(refused.id)).crm_lead_id]  # amoCRM refuses notes on it
    await env.say(refused.id, "в никуда")
    await env.say(kept.id, "дошло")
    await env.drain()
    done = {item.id for item in await env.items(state=DONE)}
    [failed] = await env.items(state=FAILED)
    assert len(done) >= 3

    env.clock.advance(timedelta(days=7, hours=-1).total_seconds())
    await env.crm.worker.round()  # the hourly pruning: a week has not passed yet
    assert done <= {item.id for item in await env.items(state=DONE)}
    env.clock.advance(timedelta(hours=2).total_seconds())
    await env.crm.worker.round()

    assert not done & {item.id for item in await env.items()}
    assert [item.id for item in await env.items(state=FAILED)] == [failed.id]  # waits for `optobot crm retry`, however old


async def test_notes_and_task_deadlines_are_in_the_accounts_time_zone(db, database_url: str, amocrm) -> None:  # noqa: F811
    zone = ZoneInfo("Asia/Yekaterinburg")  # the account's (UTC+5); the bot's TIMEZONE stays Europe/Moscow
    amocrm.account.timezone = zone
    env = await make_env(db, database_url, amocrm, TIMEZONE="Europe/Moscow")
    try:
        lead = await env.new_lead(tg_user_id=61, first_name="Анна", phone="+79990006161")
        await env.say(lead.id, "Добрый вечер")
        await env.event(lead.id, CALLBACK_REQUESTED, phone="+79990006161")
        await env.drain()
    finally:
        await env.crm.close()
    crm_id = (await env.lead(lead.id)).crm_lead_id
    [note] = [text for text in env.notes(crm_id) if "Добрый вечер" in text]
    [task] = amocrm.account.find_tasks(entity_ids=[crm_id])
    async with env.db() as session:
        said = (await session.execute(select(Message.created_at).where(Message.lead_id == lead.id))).scalar_one()
    assert note.startswith(f"Покупатель (Анна), {said.astimezone(zone):%d.%m %H:%M}")
    assert f"до {datetime.fromtimestamp(task['complete_till'], zone):%d.%m %H:%M}" in amocrm.describe_lead(crm_id)


async def test_a_task_set_outside_working_hours_is_due_after_the_next_opening(db, database_url: str, amocrm) -> None:  # noqa: F811
    moscow = ZoneInfo("Europe/Moscow")
    clock = FakeClock(datetime(2026, 12, 4, 22, 30, tzinfo=moscow))  # Friday night
    env = await make_env(db, database_url, amocrm, clock=clock, WORKING_HOURS="09:00-19:00", WORKING_DAYS="1-5", TIMEZONE="Europe/Moscow")
    try:
        lead = await env.new_lead(tg_user_id=62, first_name="Анна", phone="+79990006262")
        await env.event(lead.id, CALLBACK_REQUESTED, phone="+79990006262")
        await env.drain()
    finally:
        await env.crm.close()
    [task] = amocrm.account.find_tasks(entity_ids=[(await env.lead(lead.id)).crm_lead_id])
    assert datetime.fromtimestamp(task["complete_till"], moscow) == datetime(2026, 12, 7, 9, 15, tzinfo=moscow)  # Monday 9:00 + 15 min
