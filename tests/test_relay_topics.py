"""A forum topic per lead: created on the first question (or on arrival), the lead card, a deleted topic
recreated, and the reply mode of a group without topics."""
from __future__ import annotations

import asyncio
from pathlib import Path

from bot.app import App
from bot.catalog.render import CatalogRenderer
from bot.relay import store
from bot.relay.card import RelayCb
from bot.sandbox.telegram import TelegramSandbox
from tests import relay_support
from tests.buyer import Buyer, buttons
from tests.relay_support import (
    IVAN,
    OLGA,
    OPERATORS,
    Team,
    eventually,
    known_lead,
    mapped,
    markup,
    relay_settings,
    running,
    topic_row,
)

settings = relay_support.settings  # the app gets the operator chat
team = relay_support.team  # managers acting in topics


async def test_first_question_opens_a_topic_with_the_lead_card(app: App, sandbox: TelegramSandbox, buyer: Buyer, team: Team) -> None:
    lead = await known_lead(app, buyer)
    buyer.send("Здравствуйте! Есть ли кроссовки 38 размера?")

    thread = await team.topic()
    [topic] = sandbox.topics(OPERATORS)
    assert topic["name"] == "🟡 Анна Петрова · Обувь · Казань"
    card, question = await team.wait(thread, 2)
    assert card["text"].splitlines() == [
        "👤 Анна Петрова · @anna_opt",
        "📱 +79991234567",
        "🏢 ИП Петрова",
        "🧾 Анкета: Обувь, 100–300 тыс ₽, Маркетплейсы, Казань",
        "🔗 Источник: yandex",
        "🏷 UTM: source=yandex, medium=cpc, campaign=shoes",
        "📊 Этап: Квалификация пройдена",
        "👔 Ответственный: Иван Смирнов",
        "🗂 amoCRM: сделка №777",
    ]
    labels = [text for text, _ in buttons(card)]
    assert labels == ["📄 Каталог ещё раз", "📱 Запросить телефон", "➡️ Этап", "🔒 Закрыть", "🚫 Бан", "⏰ Напомнить клиенту…"]
    assert question["text"] == "Здравствуйте! Есть ли кроссовки 38 размера?"
    assert "forward_origin" not in question  # a copy: the group sees the words, not a forward

    buyer.send("И ещё: какой минимальный заказ?")
    await team.wait(thread, 3)
    assert len(sandbox.topics(OPERATORS)) == 1
    row = await topic_row(app, lead.id)
    assert row.thread_id == thread and row.card_message_id == card["message_id"]


async def test_buyer_values_cannot_break_the_card(app: App, sandbox: TelegramSandbox, team: Team) -> None:
    buyer = Buyer(sandbox, 1001, "<b>x</b>", "</a><i>")
    await known_lead(app, buyer, first_name="<b>x</b>", last_name='</a> <a href="tg://user?id=1">', company="A & B <Ltd>",
                     interests={"city": "<s>Казань</s>"}, phone=None)
    buyer.send("hi")
    thread = await team.topic()
    card = team.bot_messages(thread)[0]
    name_line = card["text"].splitlines()[0]
    assert name_line == '👤 <b>x</b> </a> <a href="tg://user?id=1"> · @anna_opt'
    assert "🏢 A & B <Ltd>" in card["text"] and "🧾 Анкета: <s>Казань</s>" in card["text"]
    assert "🗂 amoCRM: сделка №777" in card["text"]
    assert markup(card) == [("bold", 3, len('<b>x</b> </a> <a href="tg://user?id=1">'))]  # only the card's own
    assert sandbox.topics(OPERATORS)[0]["name"] == '🟡 <b>x</b> </a> <a href="tg://user?id=1"> · <s>Казань</s>'
    assert [row for row in (card["reply_markup"]["inline_keyboard"]) if len(row) > 3] == []


async def test_topic_name_and_card_follow_the_stage(app: App, sandbox: TelegramSandbox, buyer: Buyer, team: Team) -> None:
    lead = await known_lead(app, buyer)
    buyer.send("Вопрос")
    thread = await team.topic()
    card, _ = await team.wait(thread, 2)

    sandbox.click(IVAN, card, RelayCb(action="stages", lead=lead.id).pack())
    await sandbox.wait_for_call("editMessageReplyMarkup")
    sandbox.click(IVAN, card, RelayCb(action="stage", lead=lead.id, stage="test_batch_sent").pack())
    notice = (await team.wait(thread, 3))[-1]
    assert notice["text"] == "➡️ Этап: Тестовая партия отправлена (Иван Смирнов)"
    await sandbox.wait_for_call("editMessageText", predicate=lambda call: call.chat_id == OPERATORS)
    assert sandbox.topics(OPERATORS)[0]["name"] == "📦 Анна Петрова · Обувь · Казань"
    card = team.bot_messages(thread)[0]
    assert "📊 Этап: Тестовая партия отправлена" in card["text"]
    assert next(text for text, _ in buttons(card)) == "📄 Каталог ещё раз"  # back to the card's own buttons


async def test_deleted_topic_is_recreated_and_the_message_kept(app: App, sandbox: TelegramSandbox, buyer: Buyer, team: Team) -> None:
    lead = await known_lead(app, buyer)
    buyer.send("Первый вопрос")
    first = await team.topic()
    await team.wait(first, 2)
    await app.bot.delete_forum_topic(OPERATORS, first)  # a manager deleted it (or Telegram archived it)

    buyer.send("Второй вопрос, после удаления")
    second = await team.topic(newer_than=first)
    assert second != first
    card, message = await team.wait(second, 2)
    assert "👤 Анна Петрова" in card["text"] and message["text"] == "Второй вопрос, после удаления"
    assert [topic["message_thread_id"] for topic in sandbox.topics(OPERATORS)] == [second]
    assert (await topic_row(app, lead.id)).thread_id == second

    team.say(IVAN, second, "Ответ в новой теме")
    _, answer = await buyer.replies(2)  # «Спасибо! Менеджер ответит…», then the manager
    assert answer["text"] == "Ответ в новой теме"


async def test_topic_on_arrival(sandbox: TelegramSandbox, database_url: str, tmp_path: Path, renderer: CatalogRenderer,
                                buyer: Buyer, team: Team) -> None:
    settings = relay_settings(sandbox, database_url, tmp_path, TOPIC_ON_ARRIVAL="true")
    async with running(settings, renderer):
        buyer.send("/start yandex__cpc__shoes")
        thread = await team.topic()
        card = team.bot_messages(thread)[0]
    assert card["text"].startswith("👤 Анна Петрова · @anna_opt")
    assert "🔗 Источник: yandex" in card["text"] and "📊 Этап: Новая заявка" in card["text"]
    assert sandbox.topics(OPERATORS)[0]["name"] == "🆕 Анна Петрова"


async def test_two_instances_create_each_planned_topic_once(sandbox: TelegramSandbox, database_url: str, tmp_path: Path,
                                                             renderer: CatalogRenderer) -> None:
    """Topics planned on arrival are created by the relay workers' rounds: two instances' rounds at the same moment
    create each lead's topic once (none created and deleted again)."""
    settings = relay_settings(sandbox, database_url, tmp_path, TOPIC_ON_ARRIVAL="true")
    first, second = App(settings, renderer=renderer), App(settings, renderer=renderer)
    await first.start()  # neither serves: the test runs their workers' rounds
    try:
        leads = [await known_lead(first, Buyer(sandbox, 3001 + index, f"Покупатель{index}")) for index in range(4)]
        async with first.db.begin() as session:
            for lead in leads:
                await store.plan_topic(session, lead.id, OPERATORS)
        await asyncio.gather(first.relay.worker.tick(), second.relay.worker.tick())
        await asyncio.gather(first.relay.worker.tick(), second.relay.worker.tick())
        async with first.db() as session:
            placed = [await store.topic(session, lead.id) for lead in leads]
    finally:
        await second.close()
        await first.close()
    assert all(topic is not None and topic.thread_id for topic in placed)
    assert len(sandbox.topics(OPERATORS)) == len(leads)
    assert [call.method for call in sandbox.calls].count("createForumTopic") == len(leads)


async def test_group_without_topics_relays_by_replies(sandbox: TelegramSandbox, database_url: str, tmp_path: Path,
                                                      renderer: CatalogRenderer, buyer: Buyer) -> None:
    settings = relay_settings(sandbox, database_url, tmp_path, forum=False)
    async with running(settings, renderer) as app:
        await known_lead(app, buyer)
        buyer.send("Есть размер 40?")
        card, forwarded = await sandbox.wait_for_messages(OPERATORS, 2)
        assert "👤 Анна Петрова" in card["text"]
        assert forwarded["text"] == "Есть размер 40?" and forwarded["forward_origin"]["sender_user"]["id"] == buyer.id
        assert sandbox.topics(OPERATORS) == []

        await buyer.reply()  # «Спасибо! Менеджер ответит…»
        await eventually(lambda: mapped(app, forwarded["message_id"]))
        sandbox.send_text(IVAN, "Просто болтаем в чате", chat_id=OPERATORS)
        sandbox.send_text(IVAN, "Да, есть", chat_id=OPERATORS, reply_to=forwarded)
        answer = await buyer.reply()
        assert answer["text"] == "Да, есть"
        sandbox.send_text(OLGA, "Ещё через карточку", chat_id=OPERATORS, reply_to=card)
        assert (await buyer.reply())["text"] == "Ещё через карточку"
        assert all(m["text"] != "Просто болтаем в чате" for m in sandbox.messages(buyer.id, from_bot=True))
