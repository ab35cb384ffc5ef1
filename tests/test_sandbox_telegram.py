"""The sandbox Telegram Bot API server, driven by a real aiogram Bot over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)
from aiogram.methods import SendMessage
from aiogram.types import (
    BufferedInputFile,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    KeyboardButton,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    ReplyParameters,
)
from aiohttp import web

from bot.sandbox.telegram import ApiError, SandboxError, TelegramSandbox, parse_html, parse_markdown_v2

BUYER = 1001
OTHER = 1002
STRANGER = 1003
GROUP = -100500


class QuickCloseSession(AiohttpSession):
    """aiogram's session sleeps 250 ms on close; tests don't need that."""

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


@pytest.fixture
async def sandbox() -> AsyncIterator[TelegramSandbox]:
    sandbox = TelegramSandbox(token="123456:TEST")
    await sandbox.start()
    sandbox.add_user(BUYER, "Анна", "Петрова", username="anna", started=True)
    sandbox.add_user(OTHER, "Олег")
    sandbox.add_user(STRANGER, "Иван")
    sandbox.add_group(GROUP, "Менеджеры", members=[OTHER])
    yield sandbox
    await sandbox.stop()


def make_bot(sandbox: TelegramSandbox, token: str | None = None) -> Bot:
    api = TelegramAPIServer.from_base(sandbox.base_url)
    return Bot(token or sandbox.token, session=QuickCloseSession(api=api))


@pytest.fixture
async def bot(sandbox: TelegramSandbox) -> AsyncIterator[Bot]:
    bot = make_bot(sandbox)
    yield bot
    await bot.session.close()


def keyboard(*data: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[[InlineKeyboardButton(text=d, callback_data=d) for d in data]])


# -- basics ---------------------------------------------------------------------------------


async def test_get_me_and_wire_errors(sandbox: TelegramSandbox, bot: Bot) -> None:
    me = await bot.get_me()
    assert (me.id, me.is_bot, me.username) == (123456, True, "optobot_sandbox_bot")

    stranger = make_bot(sandbox, token="999:WRONG")
    with pytest.raises(TelegramUnauthorizedError, match="Unauthorized"):
        await stranger.get_me()
    await stranger.session.close()

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sandbox.base_url}/bot{sandbox.token}/noSuchMethod") as response:
            assert response.status == 404
            assert await response.json() == {"ok": False, "error_code": 404, "description": "Not Found"}
        # method names are case-insensitive; JSON bodies and query strings work too
        async with http.post(f"{sandbox.base_url}/bot{sandbox.token}/SENDMESSAGE",
                             json={"chat_id": BUYER, "text": "json body"}) as response:
            assert (await response.json())["result"]["text"] == "json body"
        async with http.get(f"{sandbox.base_url}/bot{sandbox.token}/sendMessage",
                            params={"chat_id": str(BUYER), "text": "query"}) as response:
            assert (await response.json())["ok"] is True
    assert [c.method for c in sandbox.calls][-2:] == ["sendMessage", "sendMessage"]


async def test_send_message_html_stores_what_the_buyer_sees(sandbox: TelegramSandbox, bot: Bot) -> None:
    sent = await bot.send_message(
        BUYER, "  <b>Заказ №7</b> &lt;готов&gt; 😀 <a href=\"https://example.com/o/7\">ссылка</a>\n",
        parse_mode="HTML", reply_markup=keyboard("pay"),
    )
    assert sent.text == "Заказ №7 <готов> 😀 ссылка"
    entities = [(e.type, e.offset, e.length) for e in sent.entities]
    assert entities == [("bold", 0, 8), ("text_link", 20, 6)]  # 😀 is two UTF-16 units
    stored = sandbox.last(BUYER)
    assert stored["text"] == sent.text and stored["message_id"] == sent.message_id
    assert stored["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "pay"
    assert stored["from"]["is_bot"] is True and stored["chat"] == {
        "id": BUYER, "type": "private", "first_name": "Анна", "last_name": "Петрова", "username": "anna"}
    call = sandbox.calls[-1]
    assert call.ok and call.chat_id == BUYER and call.started_at <= call.finished_at
    assert call.params["parse_mode"] == "HTML"


async def test_message_ids_increment_per_chat(sandbox: TelegramSandbox, bot: Bot) -> None:
    incoming = sandbox.send_text(BUYER, "/start promo_5")
    assert incoming["entities"] == [{"type": "bot_command", "offset": 0, "length": 6}]
    first = await bot.send_message(BUYER, "one")
    second = await bot.send_message(BUYER, "two", reply_parameters=ReplyParameters(message_id=incoming["message_id"]))
    assert (incoming["message_id"], first.message_id, second.message_id) == (1, 2, 3)
    assert second.reply_to_message.text == "/start promo_5"
    with pytest.raises(TelegramBadRequest, match="message to be replied not found"):
        await bot.send_message(BUYER, "x", reply_parameters=ReplyParameters(message_id=99))


# -- Telegram's rules ------------------------------------------------------------------------


async def test_chat_access_rules(sandbox: TelegramSandbox, bot: Bot) -> None:
    with pytest.raises(TelegramBadRequest, match="^Telegram server says - Bad Request: chat not found$"):
        await bot.send_message(424242, "hi")
    with pytest.raises(TelegramForbiddenError) as never_started:
        await bot.send_message(STRANGER, "hi")
    assert never_started.value.message == "Forbidden: bot can't initiate conversation with a user"

    sandbox.send_text(STRANGER, "привет")  # writing to the bot starts the chat
    assert (await bot.send_message(STRANGER, "hi")).text == "hi"

    sandbox.block(BUYER)
    with pytest.raises(TelegramForbiddenError) as blocked:
        await bot.send_message(BUYER, "hi")
    assert blocked.value.message == "Forbidden: bot was blocked by the user"
    updates = await bot.get_updates(allowed_updates=["message", "my_chat_member"])
    kicked = updates[-1].my_chat_member
    assert (kicked.chat.id, kicked.old_chat_member.status, kicked.new_chat_member.status) == (BUYER, "member", "kicked")
    sandbox.unblock(BUYER)
    await bot.send_message(BUYER, "welcome back")

    sandbox.deactivate(BUYER)
    with pytest.raises(TelegramForbiddenError, match="Forbidden: user is deactivated"):
        await bot.send_message(BUYER, "hi")
    with pytest.raises(SandboxError):
        sandbox.send_text(OTHER, "not a member", chat_id=-1)


async def test_text_limits(sandbox: TelegramSandbox, bot: Bot) -> None:
    with pytest.raises(TelegramBadRequest, match="Bad Request: message text is empty"):
        await bot.send_message(BUYER, " <b> </b> ", parse_mode="HTML")
    assert (await bot.send_message(BUYER, "<b>" + "я" * 4096 + "</b>", parse_mode="HTML")).text == "я" * 4096
    with pytest.raises(TelegramBadRequest, match="Bad Request: message is too long"):
        await bot.send_message(BUYER, "я" * 4097)
    document = BufferedInputFile(b"%PDF", filename="price.pdf")
    with pytest.raises(TelegramBadRequest, match="Bad Request: message caption is too long"):
        await bot.send_document(BUYER, document, caption="<i>" + "x" * 1025 + "</i>", parse_mode="HTML")
    assert len(sandbox.messages(BUYER)) == 1


@pytest.mark.parametrize(
    ("html", "description"),
    [
        ("<script>alert(1)</script>", 'Unsupported start tag "script" at byte offset 0'),
        ("Итого: <b>100", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("цена</b>", "Unexpected end tag at byte offset 8"),
        ("1 < 2", 'Unsupported start tag "" at byte offset 2'),
        ("ООО Рога & Копыта", 'Unescaped "&"; use "&amp;" at byte offset 16'),
        ('<span class="x">s</span>', 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
        ("<b", "Unclosed start tag at byte offset 0"),
    ],
)
async def test_bad_html_is_rejected_like_telegram(bot: Bot, html: str, description: str) -> None:
    with pytest.raises(TelegramBadRequest) as error:
        await bot.send_message(BUYER, html, parse_mode="HTML")
    assert error.value.message == f"Bad Request: can't parse entities: {description}"


def test_html_parser_entities() -> None:
    text, entities = parse_html(
        '<pre><code class="language-python">x = 1</code></pre>\n<blockquote expandable>цитата</blockquote>'
        '<tg-spoiler>s</tg-spoiler><u><i>ui</i></u><tg-emoji emoji-id="5368324170671202286">👍</tg-emoji>'
        "&#128512;&#x41;&quot;<a href=\"https://t.me/x\">t</a>")
    assert text == 'x = 1\nцитатаsui👍😀A"t'
    assert entities == [
        {"type": "pre", "offset": 0, "length": 5, "language": "python"},
        {"type": "expandable_blockquote", "offset": 6, "length": 6},
        {"type": "spoiler", "offset": 12, "length": 1},
        {"type": "italic", "offset": 13, "length": 2},
        {"type": "underline", "offset": 13, "length": 2},
        {"type": "custom_emoji", "offset": 15, "length": 2, "custom_emoji_id": "5368324170671202286"},
        {"type": "text_link", "offset": 21, "length": 1, "url": "https://t.me/x"},
    ]
    assert parse_html("a & b", strict=False) == ("a & b", [])


def test_markdown_v2_subset() -> None:
    assert parse_markdown_v2(r"*жирный* _курсив_ `код` [сайт](https://example.com) 1\.5") == (
        "жирный курсив код сайт 1.5",
        [{"type": "bold", "offset": 0, "length": 6}, {"type": "italic", "offset": 7, "length": 6},
         {"type": "code", "offset": 14, "length": 3},
         {"type": "text_link", "offset": 18, "length": 4, "url": "https://example.com"}],
    )
    with pytest.raises(ApiError, match=r"Character '\.' is reserved"):
        parse_markdown_v2("1.5")


async def test_markdown_v2_over_http(bot: Bot) -> None:
    sent = await bot.send_message(BUYER, "*итого*", parse_mode="MarkdownV2")
    assert (sent.text, sent.entities[0].type) == ("итого", "bold")


async def test_reply_markup_rules(sandbox: TelegramSandbox, bot: Bot) -> None:
    with pytest.raises(TelegramBadRequest, match="^Telegram server says - Bad Request: BUTTON_DATA_INVALID$"):
        await bot.send_message(BUYER, "x", reply_markup=keyboard("x" * 65))
    bad_url = InlineKeyboardMarkup(inline_keyboard=[[InlineKeyboardButton(text="site", url="not a url")]])
    with pytest.raises(TelegramBadRequest, match="inline keyboard button URL 'not a url' is invalid"):
        await bot.send_message(BUYER, "x", reply_markup=bad_url)
    assert sandbox.messages(BUYER) == []

    contact_keyboard = ReplyKeyboardMarkup(
        keyboard=[[KeyboardButton(text="📱 Поделиться номером", request_contact=True)]], resize_keyboard=True)
    sent = await bot.send_message(BUYER, "Ваш телефон?", reply_markup=contact_keyboard)
    assert sent.reply_markup is None  # a Message carries only inline keyboards...
    assert sandbox.last(BUYER)["reply_markup"]["keyboard"][0][0]["request_contact"] is True  # ...the sandbox keeps it
    assert sandbox.reply_keyboard(BUYER)["resize_keyboard"] is True
    shared = sandbox.send_contact(BUYER, "+79990001122")
    assert shared["contact"] == {"phone_number": "+79990001122", "first_name": "Анна", "user_id": BUYER}
    await bot.send_message(BUYER, "Спасибо", reply_markup=ReplyKeyboardRemove())
    assert sandbox.reply_keyboard(BUYER) is None


# -- flood control and fault injection ---------------------------------------------------------


async def test_fail_next_injects_errors_before_executing(sandbox: TelegramSandbox, bot: Bot) -> None:
    sandbox.fail_next("sendMessage", error_code=429, retry_after=7, chat_id=BUYER)
    with pytest.raises(TelegramRetryAfter) as error:
        await bot.send_message(BUYER, "hi")
    assert error.value.retry_after == 7
    assert "Original description: Too Many Requests: retry after 7" in error.value.message
    assert sandbox.messages(BUYER) == []
    assert (sandbox.throttles[-1].scope, sandbox.throttles[-1].retry_after) == ("injected", 7)

    sandbox.fail_next("sendMessage", error_code=502, description="Bad Gateway", count=2)
    for _ in range(2):
        with pytest.raises(Exception, match="Bad Gateway"):
            await bot.send_message(BUYER, "hi")
    assert (await bot.send_message(BUYER, "finally")).text == "finally"

    sandbox.set_delay(0.05, method="sendMessage")
    started = time.perf_counter()
    await bot.send_message(BUYER, "slow")
    assert time.perf_counter() - started >= 0.05
    sandbox.set_delay(0, method="sendMessage")


async def test_drop_next_leaves_the_client_without_an_answer_with_the_call_executed_or_not(
        sandbox: TelegramSandbox, bot: Bot) -> None:
    """The request arrives and the connection is dropped: aiogram sees a network error after sending (not a refused
    connection), whether the sandbox delivered the message first (the default) or not."""
    sandbox.drop_next("sendMessage", chat_id=BUYER)
    with pytest.raises(TelegramNetworkError) as error:
        await bot.send_message(BUYER, "delivered, answer lost")
    assert isinstance(error.value.__cause__, aiohttp.ServerDisconnectedError)
    assert [m["text"] for m in sandbox.messages(BUYER)] == ["delivered, answer lost"]
    call = sandbox.calls[-1]
    assert (call.method, call.dropped, call.ok, call.result["text"]) == ("sendMessage", True, True, "delivered, answer lost")

    sandbox.drop_next("sendMessage", executed=False)
    with pytest.raises(TelegramNetworkError):
        await bot.send_message(BUYER, "lost on the way")
    assert [m["text"] for m in sandbox.messages(BUYER)] == ["delivered, answer lost"]
    call = sandbox.calls[-1]
    assert (call.dropped, call.ok, call.error_code, call.result) == (True, False, None, None)

    assert (await bot.send_message(BUYER, "answered")).text == "answered"  # one call each, then answers again
    assert sandbox.calls[-1].dropped is False


async def test_rate_limits(sandbox: TelegramSandbox, bot: Bot) -> None:
    for user_id in range(2000, 2010):
        sandbox.add_user(user_id, "Buyer", started=True)
    await asyncio.gather(*(bot.send_message(BUYER, str(i)) for i in range(5)))  # off by default

    sandbox.rate_limits(per_chat_per_second=1, per_chat_burst=2)
    await bot.send_message(BUYER, "1")
    await bot.send_message(BUYER, "2")
    with pytest.raises(TelegramRetryAfter) as error:
        await bot.send_message(BUYER, "3")
    assert error.value.retry_after >= 1
    assert sandbox.throttles[-1].scope == "chat"

    sandbox.rate_limits(global_per_second=3)
    for user_id in range(2000, 2003):
        await bot.send_message(user_id, "broadcast")
    with pytest.raises(TelegramRetryAfter):
        await bot.send_message(2003, "broadcast")
    await bot(SendMessage(chat_id=2004, text="paid", allow_paid_broadcast=True))  # separate 1000/s budget

    sandbox.rate_limits(group_per_minute=2, per_chat_burst=10)
    await bot.send_message(GROUP, "a")
    await bot.send_message(GROUP, "b")
    with pytest.raises(TelegramRetryAfter) as error:
        await bot.send_message(GROUP, "c")
    assert error.value.retry_after >= 20 and sandbox.throttles[-1].scope == "group"

    sandbox.rate_limits(enabled=False)
    await bot.send_message(GROUP, "c")


async def test_group_limits_are_on_by_default(sandbox: TelegramSandbox, bot: Bot) -> None:
    """Telegram's limits for one group hold with nothing configured: 20 posts (every copy and album item
    counts) and 20 new topics in any 60 s; other chats are not affected, and they can be switched off."""
    sandbox.add_user(BUYER + 10, "Буфер", started=True)
    photo = await bot.send_photo(BUYER, BufferedInputFile(b"x" * 100, "a.jpg"))
    await asyncio.gather(*(bot.send_message(GROUP, str(i)) for i in range(17)))
    await bot.copy_message(GROUP, BUYER, photo.message_id)
    await bot.copy_messages(GROUP, BUYER, [photo.message_id])
    await bot.send_message(GROUP, "20")
    with pytest.raises(TelegramRetryAfter) as error:
        await bot.copy_message(GROUP, BUYER, photo.message_id)
    assert 55 <= error.value.retry_after <= 60 and sandbox.throttles[-1].scope == "group"
    with pytest.raises(TelegramRetryAfter):
        await bot.send_media_group(GROUP, [InputMediaPhoto(media=photo.photo[-1].file_id)] * 2)
    await asyncio.gather(*(bot.send_message(BUYER + 10, str(i)) for i in range(25)))  # private chats: not limited
    assert len(sandbox.messages(GROUP, from_bot=True)) == 20

    topics = [await bot.create_forum_topic(GROUP, f"t{i}") for i in range(20)]
    with pytest.raises(TelegramRetryAfter):
        await bot.create_forum_topic(GROUP, "t20")
    assert sandbox.throttles[-1].scope == "topics" and len(topics) == 20

    sandbox.rate_limits(enabled=False, group_limits=False)
    await asyncio.gather(*(bot.send_message(GROUP, str(i)) for i in range(25)))
    await bot.create_forum_topic(GROUP, "t21")


# -- files ---------------------------------------------------------------------------------


async def test_document_upload_resend_and_download(sandbox: TelegramSandbox, bot: Bot) -> None:
    sent = await bot.send_document(BUYER, BufferedInputFile(b"%PDF-1.7 price", filename="price.pdf"),
                                   caption="<b>Прайс</b>", parse_mode="HTML")
    document = sent.document
    assert (document.file_name, document.mime_type, document.file_size) == ("price.pdf", "application/pdf", 14)
    assert sent.caption == "Прайс" and sent.caption_entities[0].type == "bold"
    assert sandbox.files[document.file_id] == b"%PDF-1.7 price"

    again = await bot.send_document(BUYER, document.file_id)
    assert again.document.file_id == document.file_id

    file = await bot.get_file(document.file_id)
    assert file.file_path.endswith(".pdf")
    assert (await bot.download_file(file.file_path)).read() == b"%PDF-1.7 price"

    with pytest.raises(TelegramBadRequest, match="wrong file identifier/HTTP URL specified"):
        await bot.send_document(BUYER, "no-such-file-id")
    with pytest.raises(TelegramBadRequest, match="type of file mismatch"):
        await bot.send_photo(BUYER, document.file_id)
    by_url = await bot.send_photo(BUYER, "https://cdn.example.com/p/1.jpg")
    assert len(by_url.photo) == 2


async def test_user_media_and_albums(sandbox: TelegramSandbox, bot: Bot) -> None:
    photo = sandbox.send_media(BUYER, "photo", caption="вот такой нужен", content=b"\xff\xd8jpeg")
    voice = sandbox.send_media(BUYER, "voice", duration=3)
    location = sandbox.send_media(BUYER, "location", latitude=55.75, longitude=37.62)
    album = sandbox.send_album(BUYER, ["photo", {"kind": "photo", "caption": "второе"}])
    updates = await bot.get_updates()
    messages = [u.message for u in updates]
    assert messages[0].photo[-1].file_id == photo["photo"][-1]["file_id"] and messages[0].caption == "вот такой нужен"
    assert messages[1].voice.duration == 3 and messages[2].location.latitude == 55.75
    assert messages[3].media_group_id == messages[4].media_group_id == album[0]["media_group_id"]
    file = await bot.get_file(photo["photo"][-1]["file_id"])
    assert (await bot.download_file(file.file_path)).read() == b"\xff\xd8jpeg"
    assert voice["voice"]["mime_type"] == "audio/ogg" and location["location"]["longitude"] == 37.62

    sent = await bot.send_media_group(GROUP, [
        InputMediaPhoto(media=BufferedInputFile(b"1", filename="1.jpg"), caption="<b>1</b>", parse_mode="HTML"),
        InputMediaPhoto(media=photo["photo"][-1]["file_id"]),
    ])
    assert len({m.media_group_id for m in sent}) == 1 and sent[0].caption == "1"


async def test_every_send_method_parses_in_aiogram(sandbox: TelegramSandbox, bot: Bot) -> None:
    def upload(name: str) -> BufferedInputFile:
        return BufferedInputFile(b"data", filename=name)

    video = await bot.send_video(BUYER, upload("v.mp4"), duration=5, caption="обзор")
    voice = await bot.send_voice(BUYER, upload("v.ogg"), duration=2)
    audio = await bot.send_audio(BUYER, upload("a.mp3"), performer="P", title="T")
    animation = await bot.send_animation(BUYER, upload("a.gif"))
    note = await bot.send_video_note(BUYER, upload("n.mp4"), length=240)
    sticker = await bot.send_sticker(BUYER, upload("s.webp"), emoji="👍")
    location = await bot.send_location(BUYER, 55.7, 37.6)
    contact = await bot.send_contact(BUYER, "+79990001122", "Склад")
    assert (video.video.duration, video.caption, voice.voice.duration) == (5, "обзор", 2)
    assert (audio.audio.performer, animation.animation.file_id) == ("P", animation.document.file_id)
    assert (note.video_note.length, sticker.sticker.emoji, location.location.latitude) == (240, "👍", 55.7)
    assert contact.contact.first_name == "Склад"

    assert await bot.send_chat_action(BUYER, "typing") is True
    with pytest.raises(TelegramBadRequest, match="wrong parameter action in request"):
        await bot.send_chat_action(BUYER, "dancing")

    replaced = await bot.edit_message_media(InputMediaPhoto(media=upload("p.jpg"), caption="фото"),
                                            chat_id=BUYER, message_id=video.message_id)
    assert replaced.photo and replaced.video is None and replaced.caption == "фото"
    forwarded = await bot.forward_messages(GROUP, BUYER, [voice.message_id, audio.message_id])
    assert [m["voice" if i == 0 else "audio"]["file_id"] for i, m in
            enumerate(sandbox.messages(GROUP)[-2:])] == [voice.voice.file_id, audio.audio.file_id]
    assert len(forwarded) == 2


# -- forum topics --------------------------------------------------------------------------------


async def test_forum_topics(sandbox: TelegramSandbox, bot: Bot) -> None:
    sandbox.add_group(-100600, "Без форума", forum=False)
    sandbox.add_group(-100700, "Без прав", bot_admin=False)
    with pytest.raises(TelegramBadRequest, match="Bad Request: the chat is not a forum"):
        await bot.create_forum_topic(-100600, "x")
    with pytest.raises(TelegramBadRequest, match="Bad Request: not enough rights to create a topic"):
        await bot.create_forum_topic(-100700, "x")
    with pytest.raises(TelegramBadRequest, match="TOPIC_NAME_INVALID"):
        await bot.create_forum_topic(GROUP, "x" * 129)

    topic = await bot.create_forum_topic(GROUP, "Анна Петрова · заказ", icon_color=16766590)
    assert (topic.name, topic.icon_color) == ("Анна Петрова · заказ", 16766590)
    created = sandbox.messages(GROUP, include_service=True)[0]
    assert created["message_id"] == topic.message_thread_id
    assert created["forum_topic_created"] == {"name": "Анна Петрова · заказ", "icon_color": 16766590}

    card = await bot.send_message(GROUP, "Карточка клиента", message_thread_id=topic.message_thread_id)
    assert card.message_thread_id == topic.message_thread_id and card.is_topic_message is True
    assert card.reply_to_message.forum_topic_created is not None  # as Telegram does for topic messages
    reply = sandbox.send_text(OTHER, "Беру в работу", chat_id=GROUP, reply_to=card.message_id)
    assert reply["message_thread_id"] == topic.message_thread_id
    assert [m["text"] for m in sandbox.messages(GROUP, thread_id=topic.message_thread_id)] == [
        "Карточка клиента", "Беру в работу"]

    await bot.close_forum_topic(GROUP, topic.message_thread_id)
    assert sandbox.topics(GROUP)[0]["is_closed"] is True
    with pytest.raises(TelegramBadRequest, match="TOPIC_NOT_MODIFIED"):
        await bot.close_forum_topic(GROUP, topic.message_thread_id)
    await bot.reopen_forum_topic(GROUP, topic.message_thread_id)
    await bot.edit_forum_topic(GROUP, topic.message_thread_id, name="Анна · оплачен")
    assert sandbox.topics(GROUP)[0]["name"] == "Анна · оплачен"

    await bot.delete_forum_topic(GROUP, topic.message_thread_id)
    assert sandbox.topics(GROUP) == [] and sandbox.messages(GROUP, include_service=True) == []
    with pytest.raises(TelegramBadRequest, match="^Telegram server says - Bad Request: message thread not found$"):
        await bot.send_message(GROUP, "x", message_thread_id=topic.message_thread_id)


async def test_copy_and_forward(sandbox: TelegramSandbox, bot: Bot) -> None:
    topic = await bot.create_forum_topic(GROUP, "Анна")
    question = sandbox.send_text(BUYER, "Есть ли <скидка>?")
    photo = sandbox.send_media(BUYER, "photo", caption="такой")

    copied = await bot.copy_message(GROUP, BUYER, question["message_id"], message_thread_id=topic.message_thread_id)
    stored = sandbox.messages(GROUP, thread_id=topic.message_thread_id)[-1]
    assert stored["message_id"] == copied.message_id and stored["text"] == "Есть ли <скидка>?"
    assert stored["from"]["id"] == sandbox.bot["id"] and stored["is_topic_message"] is True

    await bot.copy_message(GROUP, BUYER, photo["message_id"], message_thread_id=topic.message_thread_id,
                           caption="<i>фото от клиента</i>", parse_mode="HTML")
    assert sandbox.last(GROUP)["caption"] == "фото от клиента"
    assert sandbox.last(GROUP)["photo"] == photo["photo"]

    forwarded = await bot.forward_message(GROUP, BUYER, question["message_id"])
    assert forwarded.forward_origin.sender_user.id == BUYER

    with pytest.raises(TelegramBadRequest, match="Bad Request: message to copy not found"):
        await bot.copy_message(GROUP, BUYER, 999)
    with pytest.raises(TelegramBadRequest, match="Bad Request: message to forward not found"):
        await bot.forward_message(GROUP, BUYER, 999)
    with pytest.raises(TelegramBadRequest, match="message can't be copied"):
        await bot.copy_message(BUYER, GROUP, topic.message_thread_id)

    album = sandbox.send_album(BUYER, ["photo", "photo"])
    ids = await bot.copy_messages(GROUP, BUYER, [m["message_id"] for m in album],
                                  message_thread_id=topic.message_thread_id)
    copies = [sandbox.messages(GROUP)[-2], sandbox.messages(GROUP)[-1]]
    assert [c["message_id"] for c in copies] == [i.message_id for i in ids]
    assert copies[0]["media_group_id"] == copies[1]["media_group_id"] != album[0]["media_group_id"]


async def test_edits_and_deletes(sandbox: TelegramSandbox, bot: Bot) -> None:
    sent = await bot.send_message(BUYER, "<b>Корзина</b>: 1 шт", parse_mode="HTML", reply_markup=keyboard("plus"))
    edited = await bot.edit_message_text("<b>Корзина</b>: 2 шт", chat_id=BUYER, message_id=sent.message_id,
                                         parse_mode="HTML", reply_markup=keyboard("plus"))
    assert edited.text == "Корзина: 2 шт" and edited.edit_date is not None
    assert sandbox.last(BUYER)["text"] == "Корзина: 2 шт"

    with pytest.raises(TelegramBadRequest) as not_modified:
        await bot.edit_message_text("<b>Корзина</b>: 2 шт", chat_id=BUYER, message_id=sent.message_id,
                                    parse_mode="HTML", reply_markup=keyboard("plus"))
    assert not_modified.value.message == (
        "Bad Request: message is not modified: specified new message content and reply markup are exactly "
        "the same as a current content and reply markup of the message")
    with pytest.raises(TelegramBadRequest, match="Bad Request: message to edit not found"):
        await bot.edit_message_text("x", chat_id=BUYER, message_id=999)

    await bot.edit_message_text("Корзина: 2 шт", chat_id=BUYER, message_id=sent.message_id)
    assert "reply_markup" not in sandbox.last(BUYER)  # an edit without markup drops the keyboard
    await bot.edit_message_reply_markup(chat_id=BUYER, message_id=sent.message_id, reply_markup=keyboard("pay"))
    assert sandbox.last(BUYER)["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "pay"

    doc = await bot.send_document(BUYER, BufferedInputFile(b"1", filename="a.pdf"), caption="v1")
    await bot.edit_message_caption(chat_id=BUYER, message_id=doc.message_id, caption="v2")
    assert sandbox.last(BUYER)["caption"] == "v2"
    with pytest.raises(TelegramBadRequest, match="there is no text in the message to edit"):
        await bot.edit_message_text("x", chat_id=BUYER, message_id=doc.message_id)

    assert await bot.delete_message(BUYER, doc.message_id) is True
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(BUYER, doc.message_id)

    incoming = sandbox.send_text(BUYER, "опечтака")
    sandbox.edit_text(BUYER, BUYER, incoming["message_id"], "опечатка")
    updates = await bot.get_updates()
    assert updates[-1].edited_message.text == "опечатка"


# -- updates: callbacks, long polling, webhooks -----------------------------------------------------


async def test_callback_click_flow(sandbox: TelegramSandbox, bot: Bot) -> None:
    sent = await bot.send_message(BUYER, "Подтвердить заказ?", reply_markup=keyboard("confirm:7", "cancel:7"))
    with pytest.raises(SandboxError, match="no button with callback_data 'delete:7'"):
        sandbox.click(BUYER, sandbox.last(BUYER), "delete:7")

    query = sandbox.click(BUYER, sandbox.last(BUYER), "confirm:7")
    updates = await bot.get_updates(timeout=1)
    callback = updates[-1].callback_query
    assert (callback.id, callback.data, callback.from_user.id) == (query["id"], "confirm:7", BUYER)
    assert callback.message.message_id == sent.message_id

    assert await bot.answer_callback_query(callback.id, text="Заказ подтверждён", show_alert=True)
    assert sandbox.callback_answers == [{
        "callback_query_id": query["id"], "user_id": BUYER, "chat_id": BUYER, "message_id": sent.message_id,
        "data": "confirm:7", "text": "Заказ подтверждён", "show_alert": True, "url": None, "cache_time": 0}]
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query(callback.id)


async def test_long_poll_wakes_on_new_update(sandbox: TelegramSandbox, bot: Bot) -> None:
    first = sandbox.send_text(BUYER, "раз")
    updates = await bot.get_updates(timeout=10)  # queued → immediate
    assert updates[0].message.message_id == first["message_id"]

    started = time.perf_counter()
    poll = asyncio.create_task(bot.get_updates(offset=updates[-1].update_id + 1, timeout=10))
    await asyncio.sleep(0.05)
    sandbox.send_text(BUYER, "два")
    updates = await asyncio.wait_for(poll, 2)
    assert [u.message.text for u in updates] == ["два"]
    assert time.perf_counter() - started < 1

    # allowed_updates is honoured for updates created afterwards; a second poller ends the first
    await bot.get_updates(offset=updates[-1].update_id + 1, allowed_updates=["callback_query"])
    sandbox.send_text(BUYER, "не доставится")
    older = asyncio.create_task(bot.get_updates(timeout=10))
    await asyncio.sleep(0.05)
    assert await bot.get_updates() == []
    with pytest.raises(TelegramConflictError, match="terminated by other getUpdates request"):
        await older


async def test_wait_helpers(sandbox: TelegramSandbox, bot: Bot) -> None:
    async def reply_later() -> None:
        await asyncio.sleep(0.02)
        await bot.send_message(BUYER, "первый")
        await bot.send_message(BUYER, "второй")

    since = time.perf_counter()
    task = asyncio.create_task(reply_later())
    messages = await sandbox.wait_for_messages(BUYER, 2, timeout=2)
    assert [m["text"] for m in messages] == ["первый", "второй"]
    call = await sandbox.wait_for_call("sendMessage", since=since, predicate=lambda c: c.params["text"] == "второй")
    assert call.started_at >= since and call.ok
    await task
    with pytest.raises(TimeoutError, match="got 2") as error:
        await sandbox.wait_for_messages(BUYER, 3, timeout=0.05)
    assert "первый" in str(error.value)


async def test_webhook_delivery(sandbox: TelegramSandbox, bot: Bot) -> None:
    received: list[tuple[str | None, dict]] = []
    failures = [500]  # the first delivery fails; the sandbox retries

    async def webhook(request: web.Request) -> web.Response:
        if failures:
            return web.Response(status=failures.pop())
        update = await request.json()
        received.append((request.headers.get("X-Telegram-Bot-Api-Secret-Token"), update))
        if "callback_query" in update:  # answer by replying to the webhook, as aiogram can
            return web.json_response({"method": "answerCallbackQuery",
                                      "callback_query_id": update["callback_query"]["id"], "text": "ok"})
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook", webhook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        await bot.set_webhook(f"http://127.0.0.1:{port}/hook", secret_token="s3cret")
        with pytest.raises(TelegramConflictError, match="can't use getUpdates method while webhook is active"):
            await bot.get_updates()
        sandbox.send_text(BUYER, "через вебхук")
        sent = await bot.send_message(BUYER, "?", reply_markup=keyboard("ok"))
        sandbox.click(BUYER, sandbox.last(BUYER), "ok")
        await sandbox.wait_for_call("answerCallbackQuery", timeout=3)
        assert [secret for secret, _ in received] == ["s3cret", "s3cret"]
        assert received[0][1]["message"]["text"] == "через вебхук"
        assert sandbox.callback_answers[0]["message_id"] == sent.message_id
        info = await bot.get_webhook_info()
        assert info.url.endswith("/hook") and info.pending_update_count == 0
        assert "500" in info.last_error_message
        await bot.delete_webhook()
        assert await bot.get_updates() == []
    finally:
        await runner.cleanup()


async def test_aiogram_webhook_reply_is_executed(sandbox: TelegramSandbox, bot: Bot) -> None:
    from aiogram import Dispatcher
    from aiogram.types import Message
    from aiogram.webhook.aiohttp_server import SimpleRequestHandler

    dispatcher = Dispatcher()

    @dispatcher.message()
    async def echo(message: Message) -> SendMessage:
        return message.answer(f"<b>Эхо:</b> {message.text}", parse_mode="HTML")  # answered in the webhook response

    app = web.Application()
    SimpleRequestHandler(dispatcher, bot, handle_in_background=False, secret_token="s3cret").register(app, "/hook")
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        await bot.set_webhook(f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook",
                              secret_token="s3cret")
        sandbox.send_text(BUYER, "прайс")
        [reply] = await sandbox.wait_for_messages(BUYER, 1, timeout=3)
        assert reply["text"] == "Эхо: прайс" and reply["entities"][0]["type"] == "bold"
    finally:
        await bot.delete_webhook()
        await runner.cleanup()


# -- chats, commands and the HTTP control API ------------------------------------------------------


async def test_chat_info_members_and_commands(sandbox: TelegramSandbox, bot: Bot) -> None:
    chat = await bot.get_chat(GROUP)
    assert (chat.type, chat.title, chat.is_forum) == ("supergroup", "Менеджеры", True)
    assert (await bot.get_chat_member(GROUP, OTHER)).status == "member"
    assert (await bot.get_chat_member(GROUP, BUYER)).status == "left"
    me = await bot.get_chat_member(GROUP, sandbox.bot["id"])
    assert me.status == "administrator" and me.can_manage_topics is True
    assert [m.user.id for m in await bot.get_chat_administrators(GROUP)] == [sandbox.bot["id"]]
    sandbox.join(GROUP, BUYER)
    assert (await bot.get_chat_member(GROUP, BUYER)).status == "member"
    sandbox.leave(GROUP, OTHER)
    assert (await bot.get_chat_member(GROUP, OTHER)).status == "left"
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.get_chat(STRANGER)

    from aiogram.types import BotCommand

    await bot.set_my_commands([BotCommand(command="start", description="Начать")])
    assert sandbox.bot_commands() == [{"command": "start", "description": "Начать"}]
    assert [c.command for c in await bot.get_my_commands()] == ["start"]
    with pytest.raises(TelegramBadRequest, match="BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand(command="Bad Command", description="x")])
    await bot.delete_my_commands()
    assert sandbox.bot_commands() == []


async def test_http_control_api(sandbox: TelegramSandbox, bot: Bot) -> None:
    async with aiohttp.ClientSession(base_url=sandbox.base_url) as http:
        async def control(action: str, **body: object) -> object:
            async with http.post(f"/sandbox/{action}", json=body) as response:
                answer = await response.json()
                assert answer["ok"], answer
                return answer["result"]

        assert (await control("add_user", user_id=5005, first_name="Пётр"))["id"] == 5005
        message = await control("send_text", user_id=5005, text="/start")
        assert message["entities"][0]["type"] == "bot_command"
        waiter = asyncio.create_task(control("wait_for_messages", chat_id=5005, count=1, timeout=2))
        await bot.send_message(5005, "Здравствуйте", reply_markup=keyboard("catalog"))
        [reply] = await waiter
        assert reply["text"] == "Здравствуйте"
        query = await control("click", user_id=5005, message=reply, callback_data="catalog")
        assert query["data"] == "catalog"
        calls = await control("calls", method="sendMessage")
        assert calls[-1]["params"]["text"] == "Здравствуйте"
        await control("send_media", user_id=5005, kind="document", content_base64="JVBERg==", file_name="a.pdf")
        assert sandbox.files[sandbox.messages(5005)[-1]["document"]["file_id"]] == b"%PDF"
        async with http.post("/sandbox/click", json={"user_id": 5005, "message": reply,
                                                     "callback_data": "nope"}) as response:
            assert response.status == 400 and "no button" in (await response.json())["error"]
        async with http.post("/sandbox/nope", json={}) as response:
            assert response.status == 404
