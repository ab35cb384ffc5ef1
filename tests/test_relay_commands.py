"""Quick replies and card buttons in a topic, and who may use them: members, admins, nobody from outside."""
from __future__ import annotations

from bot.app import App
from bot.catalog.model import load_catalogue
from bot.relay.card import RelayCb
from bot.sandbox.telegram import TelegramSandbox
from bot.texts import plural
from tests import relay_support
from tests.buyer import Buyer, buttons
from tests.relay_support import (
    IVAN,
    OLGA,
    OPERATORS,
    OPERATORS_YAML,
    STRANGER,
    THANKS,
    Team,
    events,
    eventually,
    logged,
    markup,
    open_topic,
)

settings = relay_support.settings  # the app gets the operator chat
team = relay_support.team  # managers acting in topics


async def test_templates_fill_in_the_lead_and_escape_it(app: App, sandbox: TelegramSandbox, buyer: Buyer, team: Team) -> None:
    thread = (await open_topic(app, buyer, team, first_name="<b>Анна</b> & Co")).thread
    team.say(IVAN, thread, "/templates")
    listing = (await team.wait(thread, 3))[2]
    assert "/catalog — Каталог ещё раз" in listing["text"] and "/hello — Приветствие" in listing["text"]

    command = team.say(IVAN, thread, "/hello")
    greeting = await buyer.reply()
    assert greeting["text"] == "<b>Анна</b> & Co, здравствуйте! Я Иван Смирнов. Ваши категории: Обувь."
    assert markup(greeting) == []  # the buyer's name is text, not markup
    mirror = (await team.wait(thread, 4))[3]
    assert mirror["text"] == greeting["text"] and mirror["reply_to_message"]["message_id"] == command["message_id"]

    async def logged_as_manager() -> bool:
        return len(await logged(app, author="manager")) == 1

    await eventually(logged_as_manager)
    [note] = await logged(app, author="manager")
    assert note.author_name == "Иван Смирнов" and note.meta["quick_reply"] == "hello" and note.text == greeting["text"]


async def test_price_test_and_phone_quick_replies(app: App, sandbox: TelegramSandbox, buyer: Buyer, team: Team, settings) -> None:
    thread, card, _, lead_id = await open_topic(app, buyer, team)
    team.say(IVAN, thread, "/price")
    price = await buyer.reply()
    shoes = [product.prices["100to300k"] for product in load_catalogue(settings.catalog_dir).in_category("shoes")]
    low, high = (f"{value:,}\u00a0₽".replace(",", "\u00a0") for value in (min(shoes), max(shoes)))
    assert price["text"].splitlines() == [
        "Оптовые цены для объёма 100–300 тыс ₽", f"• Обувь: {plural('ru', 'relay.price.models', len(shoes))}, от {low} до {high}",
        "Минимальный заказ, размеры и фото — в каталоге."]

    team.say(IVAN, thread, "/test")
    offer = await buyer.reply()
    assert "тестовая партия" in offer["text"] and any("тестовую партию" in label for label, _ in buttons(offer))

    sandbox.click(IVAN, card, RelayCb(action="phone", lead=lead_id).pack())
    ask = await buyer.reply()
    assert ask["text"].startswith("Пожалуйста, поделитесь номером телефона")
    assert sandbox.reply_keyboard(buyer.id)["keyboard"][0][0]["request_contact"] is True


async def test_catalogue_again_from_the_card(app: App, sandbox: TelegramSandbox, buyer: Buyer, team: Team) -> None:
    thread, card, _, lead_id = await open_topic(app, buyer, team)
    sandbox.click(IVAN, card, RelayCb(action="catalog", lead=lead_id).pack())
    document, _, offer = await buyer.replies(3, timeout=30)
    assert document["document"]["file_name"].endswith(".pdf") and "тестовая партия" in offer["text"]
    notice = (await team.wait(thread, 3))[2]
    assert notice["text"] == "📄 Каталог отправлен покупателю (Иван Смирнов)"
    assert len(await events(app, "catalog_sent")) == 1


async def test_close_and_reopen(app: App, sandbox: TelegramSandbox, buyer: Buyer, team: Team) -> None:
    thread, card, _, lead_id = await open_topic(app, buyer, team)
    sandbox.click(IVAN, card, RelayCb(action="close", lead=lead_id).pack())
    await sandbox.wait_for_call("closeForumTopic")
    assert sandbox.topics(OPERATORS)[0]["is_closed"] is True
    await sandbox.wait_for_call("editMessageText", predicate=lambda call: call.chat_id == OPERATORS)
    card = team.bot_messages(thread)[0]
    assert "🔒 Диалог закрыт" in card["text"] and "🔓 Открыть" in [label for label, _ in buttons(card)]

    buyer.send("Я вернулся с вопросом")
    copy = (await team.wait(thread, 4))[-1]
    assert copy["text"] == "Я вернулся с вопросом"
    assert sandbox.topics(OPERATORS)[0]["is_closed"] is False


async def test_nothing_from_outside_the_operator_chat_reaches_the_buyer(app: App, sandbox: TelegramSandbox, buyer: Buyer,
                                                                         team: Team) -> None:
    thread, card, _, lead_id = await open_topic(app, buyer, team)
    other = -1009999999999
    sandbox.add_group(other, "Чужая группа", forum=True, members=[STRANGER])
    same_thread = (await app.bot.create_forum_topic(other, "Тема")).message_thread_id
    assert same_thread == thread  # thread ids repeat across chats: only the chat tells them apart
    sandbox.send_text(STRANGER, "Покупатель, привет от конкурента", chat_id=other, message_thread_id=same_thread)
    sandbox.send_text(STRANGER, "/price", chat_id=other, message_thread_id=same_thread)

    sandbox.join(OPERATORS, STRANGER)
    sandbox.send_text(STRANGER, "/price", chat_id=OPERATORS, message_thread_id=thread)
    sandbox.leave(OPERATORS, STRANGER)  # no longer a member by the time the bot checks
    sandbox.join(OPERATORS, STRANGER)
    sandbox.click(STRANGER, card, RelayCb(action="catalog", lead=lead_id).pack())
    sandbox.leave(OPERATORS, STRANGER)

    team.say(IVAN, thread, "Ответ менеджера")
    assert (await buyer.reply())["text"] == "Ответ менеджера"
    assert [m.get("text") for m in sandbox.messages(buyer.id, from_bot=True)] == [THANKS, "Ответ менеджера"]
    assert sandbox.messages(other, from_bot=True) == []
    assert await events(app, "catalog_sent") == []


async def test_ban_and_reload_are_for_admins(app: App, sandbox: TelegramSandbox, buyer: Buyer, team: Team, settings) -> None:
    thread, card, _, lead_id = await open_topic(app, buyer, team)
    sandbox.click(IVAN, card, RelayCb(action="ban", lead=lead_id).pack())
    assert (await team.wait(thread, 3))[2]["text"] == "Только для администраторов (ADMIN_IDS)."
    team.say(IVAN, thread, "/reload")
    assert (await team.wait(thread, 4))[3]["text"] == "Только для администраторов (ADMIN_IDS)."

    sandbox.click(OLGA, card, RelayCb(action="ban", lead=lead_id).pack())
    assert (await team.wait(thread, 5))[4]["text"].startswith("🚫 Покупатель забанен (Ольга Кузнецова)")
    await sandbox.wait_for_call("editForumTopic")
    assert sandbox.topics(OPERATORS)[0]["name"].startswith("🚫 Анна Петрова")
    buyer.send("Спам спам спам")
    team.say(OLGA, thread, "/unban")
    assert (await team.wait(thread, 6))[5]["text"].startswith("✅ Покупатель разбанен")
    buyer.send("Извините, вопрос по делу")
    copy = (await team.wait(thread, 7))[6]
    assert copy["text"] == "Извините, вопрос по делу"  # the spam sent while banned never came
    assert [event.data["manager"] for event in await events(app, "banned")] == ["Ольга Кузнецова"]

    settings.operators_config.write_text(OPERATORS_YAML + "  bye:\n    title: Прощание\n    text: До встречи, {{ lead.first_name }}!\n",
                                         encoding="utf-8")
    team.say(OLGA, thread, "/reload")
    assert (await team.wait(thread, 8))[7]["text"] == "Перечитано: 2 шаблона, 2 менеджера."
    team.say(IVAN, thread, "/bye")
    assert [m["text"] for m in await buyer.replies(2)] == [THANKS, "До встречи, Анна!"]  # «thanks» for the spam

    settings.operators_config.write_text(OPERATORS_YAML + "  stats:\n    title: x\n    text: '{{ lead.first_name'\n", encoding="utf-8")
    team.say(OLGA, thread, "/reload")
    refused = (await team.wait(thread, 10))[9]["text"]
    assert refused.startswith("Не удалось перечитать, остались прежние:") and "'stats' is a built-in command" in refused
    team.say(IVAN, thread, "/bye")
    assert (await buyer.reply())["text"] == "До встречи, Анна!"
