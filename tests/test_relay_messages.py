"""The two-way relay: every media type, albums, edits, replies across a restart, long texts, internal notes,
a buyer who blocked the bot, broadcasts."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from bot.app import App
from bot.catalog.render import CatalogRenderer
from bot.db.models import Lead
from bot.sandbox.telegram import TelegramSandbox
from tests import relay_support
from tests.buyer import Buyer
from tests.relay_support import (
    IVAN,
    OLGA,
    OPERATORS,
    PETR,
    THANKS,
    Team,
    eventually,
    logged,
    mapped,
    open_topic,
    relay_settings,
    running,
)

settings = relay_support.settings  # the app gets the operator chat
team = relay_support.team  # managers acting in topics

FILE_KINDS = ("photo", "document", "voice", "video", "video_note", "sticker", "audio", "animation")


def kind_of(message: dict) -> str:
    for kind in (*FILE_KINDS, "location", "contact", "text"):
        if kind in message and not (kind == "document" and "animation" in message):
            return kind
    raise AssertionError(message)


async def test_every_kind_of_buyer_message_reaches_the_topic(app: App, sandbox: TelegramSandbox, buyer: Buyer, team: Team) -> None:
    thread = (await open_topic(app, buyer, team)).thread
    sent = [sandbox.send_media(buyer.id, kind, caption="Смотрите" if kind in ("photo", "document", "video") else None)
            for kind in FILE_KINDS]
    sent.append(sandbox.send_media(buyer.id, "location", latitude=55.79, longitude=49.12))
    sent.append(sandbox.send_contact(buyer.id, "+79035550011", contact_user_id=None, first_name="Олег", last_name="Закупщик"))

    copies = (await team.wait(thread, 2 + len(sent)))[2:]
    assert [kind_of(copy) for copy in copies] == [*FILE_KINDS, "location", "contact"]
    for original, copy in zip(sent, copies):
        kind = kind_of(original)
        assert copy[kind] == original[kind] and copy.get("caption") == original.get("caption")
        assert "forward_origin" not in copy
    notes = await logged(app, direction="in", author="buyer")
    assert [note.kind for note in notes][-len(sent):] == [*FILE_KINDS, "location", "contact"]
    assert {note.author_name for note in notes} == {"Анна Петрова"}


async def test_every_kind_of_manager_message_reaches_the_buyer(app: App, sandbox: TelegramSandbox, buyer: Buyer, team: Team) -> None:
    thread = (await open_topic(app, buyer, team)).thread
    team.say(IVAN, thread, "Добрый день! Сейчас пришлю фото.")
    sent = [team.send(IVAN, thread, kind, caption="Модель 2026" if kind == "photo" else None) for kind in FILE_KINDS]
    sent.append(team.send(PETR, thread, "location", latitude=57.0, longitude=40.97))
    sent.append(sandbox.send_contact(PETR, "+79000001234", chat_id=OPERATORS, message_thread_id=thread))

    got = await buyer.replies(2 + len(sent) - 1)
    assert got[0]["text"] == "Добрый день! Сейчас пришлю фото."
    assert [kind_of(message) for message in got[1:]] == [*FILE_KINDS, "location", "contact"]
    assert all(message["from"]["is_bot"] and "forward_origin" not in message for message in got)
    assert got[1]["caption"] == "Модель 2026"

    async def all_logged() -> bool:
        return len(await logged(app, author="manager")) == 1 + len(sent)

    await eventually(all_logged)
    notes = await logged(app, author="manager")
    assert [note.author_name for note in notes] == ["Иван Смирнов"] * (1 + len(FILE_KINDS)) + ["Пётр Новиков"] * 2
    assert all(not note.is_internal for note in notes)


async def test_albums_stay_together_both_ways(app: App, sandbox: TelegramSandbox, buyer: Buyer, team: Team) -> None:
    thread = (await open_topic(app, buyer, team)).thread
    album = sandbox.send_album(buyer.id, [{"kind": "photo", "caption": "Три цвета"}, "photo", "photo"])
    buyer.send("Какой лучше?")
    copies = (await team.wait(thread, 6))[2:]
    assert [kind_of(copy) for copy in copies] == ["photo", "photo", "photo", "text"]  # the album first, then the text
    assert len({copy["media_group_id"] for copy in copies[:3]}) == 1 and copies[0]["caption"] == "Три цвета"
    assert [copy["photo"] for copy in copies[:3]] == [item["photo"] for item in album]

    sandbox.send_album(IVAN, ["photo", {"kind": "photo", "caption": "Наши"}], chat_id=OPERATORS, message_thread_id=thread)
    got = await buyer.replies(2)
    assert len({message["media_group_id"] for message in got}) == 1 and got[1]["caption"] == "Наши"


async def test_edits_are_mirrored_both_ways(app: App, sandbox: TelegramSandbox, buyer: Buyer, team: Team) -> None:
    thread = (await open_topic(app, buyer, team)).thread
    question = sandbox.messages(buyer.id, from_bot=False)[-1]
    sandbox.edit_text(buyer.id, buyer.id, question["message_id"], "Здравствуйте! Нужны кроссовки 38 размера")
    await sandbox.wait_for_call("editMessageText", predicate=lambda call: call.chat_id == OPERATORS)
    copy = team.bot_messages(thread)[1]
    assert copy["text"] == "Здравствуйте! Нужны кроссовки 38 размера" and "edit_date" in copy

    answer = team.say(IVAN, thread, "Есть, 12 пар")
    delivered = await buyer.reply()
    sandbox.edit_text(IVAN, OPERATORS, answer["message_id"], "Есть, 14 пар")
    await sandbox.wait_for_call("editMessageText", predicate=lambda call: call.chat_id == buyer.id)
    delivered = sandbox.messages(buyer.id, from_bot=True)[-1]
    assert delivered["text"] == "Есть, 14 пар" and "edit_date" in delivered

    async def edits() -> list[tuple[str, str | None]]:
        return [(note.author, note.text) for note in await logged(app) if "edit_of" in note.meta]

    async def both_logged() -> bool:
        return len(await edits()) == 2

    await eventually(both_logged)
    assert await edits() == [("buyer", "Здравствуйте! Нужны кроссовки 38 размера"), ("manager", "Есть, 14 пар")]


async def test_replies_find_their_copies_after_a_restart(sandbox: TelegramSandbox, database_url: str, tmp_path: Path,
                                                         renderer: CatalogRenderer, buyer: Buyer, team: Team) -> None:
    settings = relay_settings(sandbox, database_url, tmp_path)
    async with running(settings, renderer) as app:
        thread = (await open_topic(app, buyer, team, "Сколько стоит доставка?")).thread
        question_copy = team.bot_messages(thread)[1]
        team.say(IVAN, thread, "По Казани — бесплатно", reply_to=question_copy)
        delivered = await buyer.reply()
    question = sandbox.messages(buyer.id, from_bot=False)[0]
    assert delivered["reply_to_message"]["message_id"] == question["message_id"]

    async with running(settings, renderer):
        answer = sandbox.messages(OPERATORS, thread_id=thread, from_bot=False)[0]
        follow_up = sandbox.send_text(buyer.id, "А до Самары?", reply_to=delivered)
        follow_up_copy = (await team.wait(thread, 3))[2]
        assert follow_up_copy["reply_to_message"]["message_id"] == answer["message_id"]
        await eventually(lambda: mapped(app, follow_up_copy["message_id"]))

        team.say(OLGA, thread, "До Самары — 900 ₽", reply_to=follow_up_copy)
        thanks, second = await buyer.replies(2)  # a new question after an answer is acknowledged again
        assert thanks["text"] == THANKS
        assert second["reply_to_message"]["message_id"] == follow_up["message_id"]


async def test_long_texts_and_captions_are_split_not_dropped(app: App, sandbox: TelegramSandbox, buyer: Buyer, team: Team) -> None:
    thread = (await open_topic(app, buyer, team)).thread
    long_text = " ".join(f"слово{i}" for i in range(800))  # ~5.6k characters: over one message
    buyer.send(long_text)
    long_caption = "Подробности заказа: " + "размер 38, " * 120
    photo = sandbox.send_media(buyer.id, "photo", caption=long_caption)

    parts = await team.wait(thread, 6)
    text_parts, photo_copy, caption_part = parts[2:4], parts[4], parts[5]
    assert all(len(part["text"]) <= 4096 for part in text_parts)
    assert " ".join(part["text"] for part in text_parts) == long_text
    assert photo_copy["photo"] == photo["photo"] and len(photo_copy["caption"]) <= 1024
    assert photo_copy["caption"] + " " + caption_part["text"] == long_caption.strip()
    assert caption_part["reply_to_message"]["message_id"] == photo_copy["message_id"]


async def test_internal_notes_stay_in_the_team(app: App, sandbox: TelegramSandbox, buyer: Buyer, team: Team) -> None:
    thread = (await open_topic(app, buyer, team)).thread
    team.say(IVAN, thread, "// перезвонить завтра в 10")
    team.say(PETR, thread, "#note даём скидку 5%")
    team.send(IVAN, thread, "photo", caption="//фото образца для склада")
    team.say(IVAN, thread, "Добрый день!")

    assert (await buyer.reply())["text"] == "Добрый день!"  # the notes went first and were not delivered
    assert len(sandbox.messages(buyer.id, from_bot=True)) == 2
    await eventually(lambda: answered(app))
    notes = await logged(app, is_internal=True)
    assert [(note.author, note.author_name, note.text) for note in notes] == [
        ("manager", "Иван Смирнов", "перезвонить завтра в 10"), ("manager", "Пётр Новиков", "даём скидку 5%"),
        ("manager", "Иван Смирнов", "фото образца для склада")]

async def answered(app: App) -> bool:
    """The lead no longer waits for a reply (notes don't count, a real answer does)."""
    async with app.db() as session:
        return (await session.execute(select(Lead))).scalar_one().awaiting_reply_since is None


async def test_a_buyer_who_blocked_the_bot_is_reported_and_flagged(app: App, sandbox: TelegramSandbox, buyer: Buyer, team: Team) -> None:
    thread = (await open_topic(app, buyer, team)).thread
    sandbox.block(buyer.id)
    attempt = team.say(IVAN, thread, "Добрый день! Вы ещё с нами?")

    notice = (await team.wait(thread, 3))[2]
    assert notice["text"].startswith("⛔ Не доставлено: покупатель заблокировал бота · ")
    assert notice["text"][-5:-3].isdigit() and notice["text"][-3] == ":"  # HH:MM
    assert notice["reply_to_message"]["message_id"] == attempt["message_id"]
    await sandbox.wait_for_call("editForumTopic")
    assert sandbox.topics(OPERATORS)[0]["name"].startswith("⛔ Анна Петрова")
    await sandbox.wait_for_call("editMessageText", predicate=lambda call: call.chat_id == OPERATORS)
    assert "⛔ Покупатель заблокировал бота" in team.bot_messages(thread)[0]["text"]
    async with app.db() as session:
        assert (await session.execute(select(Lead))).scalar_one().is_blocked
    assert await logged(app, author="manager") == []


async def test_an_answer_with_an_unknown_outcome_is_announced_not_resent_and_a_refused_one_is_reported_not_sent(
        sandbox: TelegramSandbox, database_url: str, tmp_path: Path, renderer: CatalogRenderer, buyer: Buyer, team: Team) -> None:
    """The connection drops after the copy left (it reached the buyer): the topic says Telegram did not confirm it and
    it is not copied again. A copy Telegram refuses, or does not take within ``SEND_RETRY_FOR``, is reported as not sent."""
    async with running(relay_settings(sandbox, database_url, tmp_path, SEND_RETRY_FOR=1.5), renderer) as app:
        thread = (await open_topic(app, buyer, team)).thread
        sandbox.drop_next("copyMessage", chat_id=buyer.id)
        unconfirmed = team.say(IVAN, thread, "Добрый день! Вот прайс.")
        notice = (await team.wait(thread, 3))[2]
        assert notice["text"].startswith("❔ Telegram не подтвердил доставку (связь оборвалась)")
        assert notice["reply_to_message"]["message_id"] == unconfirmed["message_id"]

        sandbox.fail_next("copyMessage", error_code=400, description="Bad Request: message to copy not found", chat_id=buyer.id)
        refused = team.say(IVAN, thread, "А вот каталог.")
        notice = (await team.wait(thread, 4))[3]
        assert notice["text"].startswith("⚠️ Не отправлено: Bad Request: message to copy not found · ")
        assert notice["reply_to_message"]["message_id"] == refused["message_id"]

        sandbox.outage("copyMessage", seconds=60, chat_id=buyer.id)  # longer than the window
        late = team.say(IVAN, thread, "Вы здесь?")
        notice = (await team.wait(thread, 5, timeout=30))[4]
        sandbox.outage("copyMessage", seconds=0, chat_id=buyer.id)
        assert notice["text"].startswith("⚠️ Не отправлено: ") and notice["reply_to_message"]["message_id"] == late["message_id"]
        await app.inbox.idle()

    assert [m.get("text") for m in sandbox.messages(buyer.id, from_bot=True)] == [THANKS, "Добрый день! Вот прайс."]
    assert sum(call.method == "copyMessage" and str(call.params.get("message_id")) == str(unconfirmed["message_id"])
               for call in sandbox.calls) == 1  # never copied again


async def test_broadcasts_are_not_mirrored_but_replies_to_them_are(app: App, sandbox: TelegramSandbox, buyer: Buyer, team: Team) -> None:
    thread = (await open_topic(app, buyer, team)).thread
    broadcast = await app.bot.send_message(buyer.id, "Новая коллекция уже на складе!")  # as the broadcast engine sends
    sandbox.send_text(buyer.id, "Пришлите, пожалуйста", reply_to=broadcast.message_id)
    copy = (await team.wait(thread, 3))[2]
    assert copy["text"] == "Пришлите, пожалуйста"
    assert all("Новая коллекция" not in message.get("text", "") for message in sandbox.messages(OPERATORS))
