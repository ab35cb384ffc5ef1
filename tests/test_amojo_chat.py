"""The Telegram conversation as an amoCRM chat, over HTTP against both sandboxes: in order, once, on the right lead."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import select

from bot.app import App
from bot.catalog.render import CatalogRenderer
from bot.crm import replies
from bot.crm.models import AmojoReply
from bot.db.base import utcnow
from bot.db.models import Lead, TgSend
from bot.journal import LEAD_CREATED
from bot.media import MediaLinks
from bot.relay.models import RelayWait
from bot.sandbox.amocrm import AmoSandbox
from bot.sandbox.telegram import TelegramSandbox
from bot.sender import RELAY
from tests.amojo_support import channel_settings, connect, lead_of, registered_channel, stored_only
from tests.broadcast_support import create
from tests.buyer import Buyer
from tests.conftest import TOKEN
from tests.crm_support import eventually
from tests import relay_support
from tests.relay_support import IVAN, OPERATORS, Team, known_lead, running
from tests.test_journey_arrival import MARQUIZ, payload_of, post_marquiz


team = relay_support.team  # managers acting in topics


@pytest.fixture
async def amocrm() -> AsyncIterator[AmoSandbox]:
    server = AmoSandbox(rate_limit=None)
    await server.start()
    yield server
    await server.close()


async def test_the_conversation_is_the_amocrm_chat_of_the_buyers_lead(sandbox: TelegramSandbox, amocrm: AmoSandbox, database_url: str,
                                                                     tmp_path: Path, renderer: CatalogRenderer, buyer: Buyer) -> None:
    settings, registered = channel_settings(sandbox, amocrm, database_url, tmp_path)
    sandbox.set_profile_photo(buyer.id, b"JPEG-avatar")
    async with running(settings, renderer) as app:
        await connect(app, registered)
        body = (await post_marquiz(app, MARQUIZ)).json()
        buyer.send(f"/start {payload_of(body['start_link'])}")
        await buyer.reply()  # the greeting
        buyer.click("каталог")
        await sandbox.wait_for_messages(buyer.id, 1, timeout=30, predicate=lambda m: "document" in m)  # the catalogue
        buyer.send("Есть размеры 46–52?")
        sandbox.send_media(buyer.id, "photo", caption="Вот такие нужны")
        sandbox.send_media(buyer.id, "document", file_name="заявка.xlsx", content=b"PK-sheet",
                           mime_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
        sandbox.send_album(buyer.id, [{"kind": "photo", "caption": "цвет 1"}, {"kind": "photo", "content": b"second"}])
        conversation = f"tg-{buyer.id}"

        def received() -> int:
            chat = amocrm.chats.chat(conversation)
            return sum(1 for m in chat.messages if m["direction"] == "in") if chat else 0

        await eventually(lambda: received() >= 6, timeout=30)
        await app.inbox.idle()
        chat = amocrm.chats.chat(conversation)
        lines = amocrm.chats.transcript(conversation)
        lead = await lead_of(app, buyer.id)
        async with httpx.AsyncClient() as http:
            media = [m["media"] for m in chat.messages if m.get("media")]
            fetched = [await http.get(url) for url in media]
            sheet = await http.get(next(m["media"] for m in chat.messages if m.get("file_name") == "заявка.xlsx"))
            avatar = await http.get(chat.user["avatar"])

    incoming = [line for line in lines if line.startswith("←")]
    assert incoming == ["← Анна Петрова: /start", "← Анна Петрова: Есть размеры 46–52?", "← Анна Петрова: [picture] Вот такие нужны",
                        "← Анна Петрова: [file заявка.xlsx]", "← Анна Петрова: [picture] цвет 1", "← Анна Петрова: [picture]"], lines
    assert len({m["msgid"] for m in chat.messages}) == len(chat.messages)  # each once
    outgoing = [line for line in lines if line.startswith("→")]
    assert outgoing[0].startswith("→ optobot: ") and any("[file " in line and ".pdf" in line for line in outgoing), lines
    assert all(m["silent"] for m in chat.messages if m["direction"] == "out")
    assert lines.index(outgoing[0]) < lines.index("← Анна Петрова: Есть размеры 46–52?")  # the greeting before the question
    assert chat.contact_id == lead.crm_contact_id and lead.crm_contact_id in amocrm.account.leads[lead.crm_lead_id]["contacts"]
    assert amocrm.chats.unsorted == [] and len(amocrm.account.leads) == 1
    assert chat.user["name"] == "Анна Петрова" and chat.user["phone"]
    assert [r.status_code for r in fetched] == [200] * len(media) and sheet.content == b"PK-sheet"
    assert all(TOKEN not in url and TOKEN.split(":")[1] not in url for url in [*media, chat.user["avatar"]])
    assert avatar.content == b"JPEG-avatar" and chat.user["profile_link"] == "https://t.me/anna_opt"


@pytest.fixture
async def opened(sandbox: TelegramSandbox, amocrm: AmoSandbox, database_url: str, tmp_path: Path, renderer: CatalogRenderer,
                 buyer: Buyer, team: Team) -> AsyncIterator[tuple[App, str, int]]:
    """The service with the channel connected; a known buyer asked a question: their amoCRM chat exists with it, and
    their operator topic is open. (The service, the conversation id, the topic's thread.)"""
    settings, registered = channel_settings(sandbox, amocrm, database_url, tmp_path)
    async with running(settings, renderer) as app:
        await connect(app, registered)
        lead = await known_lead(app, buyer, crm_lead_id=None, responsible_user_id=None)
        async with app.db.begin() as session:
            await app.journal.event(session, await session.get(Lead, lead.id), LEAD_CREATED, via="telegram")
        buyer.send("Скажите, работаете с ИП?")
        thread = await team.topic()
        await buyer.reply()  # «thanks»
        conversation = f"tg-{buyer.id}"
        await eventually(lambda: amocrm.chats.chat(conversation) is not None and len(amocrm.chats.chat(conversation).messages) >= 2, timeout=20)
        yield app, conversation, thread


def statuses(amocrm: AmoSandbox, conversation: str, message_id: str) -> list[dict]:
    return next(m["statuses"] for m in amocrm.chats.chat(conversation).messages if m["id"] == message_id)


async def test_a_managers_reply_from_amocrm_reaches_the_buyer_the_topic_and_comes_back_delivered(
        sandbox: TelegramSandbox, amocrm: AmoSandbox, buyer: Buyer, team: Team, opened: tuple[App, str, int]) -> None:
    app, conversation, thread = opened
    status, text_id = await amocrm.chats.reply(conversation, "Да, *работаем* с ИП и ООО <b>", manager="Мария Соколова")
    assert status == 200
    answer = await buyer.reply()
    picture = amocrm.chats.upload(b"\x89PNG-a-picture", "image/png")
    status, picture_id = await amocrm.chats.reply(conversation, "Вот образец", kind="picture", media=picture, file_name="образец.png")
    assert status == 200
    photo = await buyer.reply()
    await eventually(lambda: statuses(amocrm, conversation, picture_id) != [], timeout=15)
    notices = await sandbox.wait_for_messages(OPERATORS, 2, thread_id=thread, predicate=lambda m: "из amoCRM" in m.get("text", ""))
    team.say(IVAN, thread, "Пришлю прайс сегодня")
    await buyer.reply()
    await eventually(lambda: any("Пришлю прайс" in line for line in amocrm.chats.transcript(conversation)), timeout=15)
    async with app.db() as session:
        wait = (await session.scalars(select(RelayWait))).one()
        recorded = (await session.scalars(select(TgSend).where(TgSend.text.contains("работаем")))).one()
    lines = amocrm.chats.transcript(conversation)

    assert answer["text"] == "Да, работаем с ИП и ООО <b>" and [e["type"] for e in answer.get("entities", [])] == ["bold"]
    assert photo["caption"] == "Вот образец" and sandbox.files[photo["photo"][-1]["file_id"]] == b"\x89PNG-a-picture"
    assert statuses(amocrm, conversation, text_id) == [{"delivery_status": 1}]
    assert recorded.kind == RELAY  # through the send outbox, never sent twice when its outcome is unknown
    assert statuses(amocrm, conversation, picture_id) == [{"delivery_status": 1}]
    assert notices[0]["text"].startswith("💬 из amoCRM: Мария Соколова\nДа, *работаем* с ИП и ООО <b>")
    assert wait.closed_at is not None and wait.answered_by_name == "Мария Соколова"  # the SLA stopped at the first answer
    assert sum("Да, *работаем*" in line for line in lines) == 1  # not sent back to the chat
    assert lines[-1].startswith("→ Иван Смирнов: Пришлю прайс сегодня")  # the topic's reply is in the amoCRM chat


async def test_a_reply_to_a_buyer_who_blocked_the_bot_comes_back_as_an_error(
        sandbox: TelegramSandbox, amocrm: AmoSandbox, buyer: Buyer, opened: tuple[App, str, int]) -> None:
    _, conversation, _ = opened
    sandbox.block(buyer.id)
    status, message_id = await amocrm.chats.reply(conversation, "Вы здесь?")
    await eventually(lambda: statuses(amocrm, conversation, message_id) != [], timeout=15)
    assert status == 200
    [error] = statuses(amocrm, conversation, message_id)
    assert error["delivery_status"] == -1 and error["error_code"] == 905 and "blocked" in error["error"]


async def test_a_reply_whose_outcome_is_unknown_is_not_resent_and_comes_back_as_an_error(
        sandbox: TelegramSandbox, amocrm: AmoSandbox, buyer: Buyer, opened: tuple[App, str, int]) -> None:
    """The connection drops after the request left, for a text (delivered) and a picture (not): neither is sent again,
    and amoCRM gets an error status saying Telegram did not confirm the delivery."""
    app, conversation, _ = opened
    sandbox.drop_next("sendMessage", chat_id=buyer.id)
    sandbox.drop_next("sendPhoto", executed=False, chat_id=buyer.id)
    _, text_id = await amocrm.chats.reply(conversation, "Вот прайс")
    picture = amocrm.chats.upload(b"\x89PNG-a-picture", "image/png")
    _, picture_id = await amocrm.chats.reply(conversation, "Вот образец", kind="picture", media=picture, file_name="образец.png")
    await eventually(lambda: statuses(amocrm, conversation, text_id) != [] and statuses(amocrm, conversation, picture_id) != [],
                     timeout=15)
    async with app.db() as session:
        recorded = (await session.scalars(select(TgSend).where(TgSend.text == "Вот прайс"))).one()

    for message_id in (text_id, picture_id):
        [error] = statuses(amocrm, conversation, message_id)
        assert error["delivery_status"] == -1 and error["error_code"] == 905 and error["error"] == replies.UNCONFIRMED
    assert recorded.state == "unknown" and recorded.attempts == 1
    assert [m.get("text") for m in sandbox.messages(buyer.id, from_bot=True)].count("Вот прайс") == 1
    assert not any("photo" in m for m in sandbox.messages(buyer.id, from_bot=True))
    assert [call.method for call in sandbox.calls if call.chat_id == buyer.id and call.dropped] == ["sendMessage", "sendPhoto"]
    assert sum(call.method in ("sendMessage", "sendPhoto") and call.chat_id == buyer.id for call in sandbox.calls) == 3  # «thanks»


async def test_a_file_from_amocrm_over_20_mb_is_not_sent_and_comes_back_as_an_error(
        sandbox: TelegramSandbox, amocrm: AmoSandbox, buyer: Buyer, opened: tuple[App, str, int]) -> None:
    """A manager attaches a file of 20 MB and one byte: the download stops at the cap, the buyer gets nothing, and
    amoCRM gets an error status naming the limit."""
    _, conversation, _ = opened
    huge = amocrm.chats.upload(b"\0" * (replies.MAX_FILE + 1), "application/pdf")
    status, message_id = await amocrm.chats.reply(conversation, "Прайс", kind="file", media=huge, file_name="прайс.pdf")
    await eventually(lambda: statuses(amocrm, conversation, message_id) != [], timeout=30)

    assert status == 200
    [error] = statuses(amocrm, conversation, message_id)
    assert error["delivery_status"] == -1 and error["error_code"] == 905 and error["error"] == "the reply's file is larger than 20 MB"
    assert not any(call.method == "sendDocument" for call in sandbox.calls)
    assert not any("document" in m for m in sandbox.messages(buyer.id, from_bot=True))


async def test_a_file_from_amocrm_that_does_not_download_in_time_is_not_sent_and_comes_back_as_an_error(
        sandbox: TelegramSandbox, amocrm: AmoSandbox, buyer: Buyer, opened: tuple[App, str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """The server holding a manager's file sends its first bytes and stalls: the download gives up after FILE_TIMEOUT,
    the buyer gets nothing, and amoCRM gets an error status saying so (the reply is not taken again lease after lease)."""
    _, conversation, _ = opened
    monkeypatch.setattr(replies, "FILE_TIMEOUT", 0.5)
    released = asyncio.Event()

    async def stalled(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/pdf"})
        await response.prepare(request)
        await response.write(b"%PDF-1.4")
        await released.wait()
        return response

    files = web.Application()
    files.router.add_get("/price.pdf", stalled)
    server = TestServer(files, host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url("/price.pdf"))
        _, message_id = await amocrm.chats.reply(conversation, "Прайс", kind="file", media=url, file_name="прайс.pdf")
        await eventually(lambda: statuses(amocrm, conversation, message_id) != [], timeout=30)
    finally:
        released.set()
        await server.close()

    [error] = statuses(amocrm, conversation, message_id)
    assert error["delivery_status"] == -1 and error["error_code"] == 905
    assert error["error"] == "the reply's file did not download within 0.5 s"
    assert not any(call.method == "sendDocument" for call in sandbox.calls)


async def test_a_broadcast_is_in_the_amocrm_chat_as_the_bots(amocrm: AmoSandbox, buyer: Buyer, opened: tuple[App, str, int]) -> None:
    app, conversation, _ = opened
    await create(app, "Новинки", text="Новая коллекция, {{ first_name }}!")
    received = await buyer.reply(timeout=30)
    await eventually(lambda: any("Новая коллекция" in line for line in amocrm.chats.transcript(conversation)), timeout=20)
    chat = amocrm.chats.chat(conversation)
    [imported] = [m for m in chat.messages if "Новая коллекция" in (m.get("text") or "")]
    assert received["text"] == "Новая коллекция, Анна!" and imported["text"] == received["text"]
    assert imported["direction"] == "out" and imported["silent"] and imported["msgid"] == f"{conversation}-{received['message_id']}"


async def test_a_forged_or_replayed_hook_is_refused_and_sends_nothing(
        sandbox: TelegramSandbox, amocrm: AmoSandbox, buyer: Buyer, opened: tuple[App, str, int]) -> None:
    app, conversation, _ = opened
    sent = len(sandbox.messages(buyer.id, from_bot=True))
    forged, _ = await amocrm.chats.reply(conversation, "Переведите предоплату сюда", secret="guessed-secret")
    replayed, _ = await amocrm.chats.reply(conversation, "старое", date_offset=-20 * 60)
    chat = amocrm.chats.chat(conversation)
    async with httpx.AsyncClient() as http:
        unsigned = await http.post(f"http://127.0.0.1:{app.http_port}/webhooks/amojo/{chat.scope_id}", json={"message": {}})
    ok, _ = await amocrm.chats.reply(conversation, "настоящий ответ")
    await buyer.reply()
    async with app.db() as session:
        kept = (await session.scalars(select(AmojoReply.payload))).all()
    assert (forged, replayed, unsigned.status_code, ok) == (401, 401, 401, 200)
    assert [m.get("text") for m in sandbox.messages(buyer.id, from_bot=True)[sent:]] == ["настоящий ответ"]
    assert [p["message"]["text"] for p in kept] == ["настоящий ответ"]


async def test_a_repeated_hook_for_one_amocrm_message_is_one_reply(
        sandbox: TelegramSandbox, amocrm: AmoSandbox, buyer: Buyer, opened: tuple[App, str, int]) -> None:
    """amoCRM sends a reply's hook twice at once, then again after it was delivered: the buyer gets it once."""
    app, conversation, _ = opened
    status, message_id = await amocrm.chats.reply(conversation, "Счёт отправлен", copies=2)
    assert (await buyer.reply())["text"] == "Счёт отправлен"
    again = await amocrm.chats.redeliver(message_id)
    _, later = await amocrm.chats.reply(conversation, "Проверьте почту")  # a later reply: goes after anything before it
    assert (await buyer.reply(timeout=20))["text"] == "Проверьте почту"
    async with app.db() as session:
        kept = (await session.scalars(select(AmojoReply.message_id).order_by(AmojoReply.id))).all()
    texts = [m.get("text") for m in sandbox.messages(buyer.id, from_bot=True)]
    assert (status, again) == (200, 200)
    assert texts.count("Счёт отправлен") == 1 and texts[-2:] == ["Счёт отправлен", "Проверьте почту"]
    assert kept == [message_id, later]
    await eventually(lambda: statuses(amocrm, conversation, later) != [], timeout=15)
    assert statuses(amocrm, conversation, message_id) == [{"delivery_status": 1}]


async def test_media_links_expire_are_unforgeable_and_never_hold_the_bot_token(
        sandbox: TelegramSandbox, amocrm: AmoSandbox, database_url: str, tmp_path: Path, renderer: CatalogRenderer, buyer: Buyer) -> None:
    settings, registered = channel_settings(sandbox, amocrm, database_url, tmp_path)
    photo = sandbox.send_media(buyer.id, "photo", content=b"a photo")  # a file the bot can get
    file_id = photo["photo"][-1]["file_id"]
    async with running(settings, renderer) as app, httpx.AsyncClient() as http:
        fresh = app.media.url(file_id, name="фото.jpg", mime="image/jpeg")
        day_ago = MediaLinks(registered.secret.encode(), app.public_base, clock=lambda: utcnow() - timedelta(hours=25))
        expired = day_ago.url(file_id)
        payload, signature = fresh.rsplit("/", 1)[1].split(".")
        other = MediaLinks(b"another key", app.public_base).url("AgAD-someone-elses-file")
        answers = [await http.get(url) for url in (fresh, expired, fresh.replace(signature, signature[::-1]), other)]
    assert [a.status_code for a in answers] == [200, 410, 404, 404]
    assert answers[0].content == b"a photo" and answers[0].headers["Content-Type"] == "image/jpeg"
    assert TOKEN not in fresh and TOKEN.split(":")[1] not in fresh and "/file/bot" not in fresh



async def test_a_buyer_whose_telegram_chat_is_held_up_does_not_hold_up_replies_to_others(
        sandbox: TelegramSandbox, amocrm: AmoSandbox, buyer: Buyer, opened: tuple[App, str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """Anna's chat is in a flood wait past her reply's lease; Oleg's reply, left by an instance that died after storing
    it, is taken by the loop and reaches him meanwhile; Anna's once her chat recovers; each once."""
    app, conversation, _ = opened
    monkeypatch.setattr(replies, "LEASE", 1.0)  # 120 s, scaled down
    oleg = Buyer(sandbox, user_id=1002, first_name="Олег")
    await known_lead(app, oleg, first_name="Олег", tg_username=None, crm_lead_id=None, responsible_user_id=None)
    oleg.send("А доставка в Минск есть?")
    await oleg.reply()  # «thanks»
    await eventually(lambda: amocrm.chats.chat(f"tg-{oleg.id}") is not None, timeout=20)
    sandbox.outage("sendMessage", seconds=600, error_code=429, retry_after=1, chat_id=buyer.id)  # Anna's chat: flood wait
    _, to_anna = await amocrm.chats.reply(conversation, "Ответ Анне")

    async def anna_held_past_her_lease() -> bool:  # her reply claimed again since it came (before: by the loop, which waited for it)
        async with app.db() as session:
            reply = (await session.scalars(select(AmojoReply).where(AmojoReply.message_id == to_anna))).one()
            return reply.claimed_at is not None and reply.claimed_at > reply.created_at + timedelta(seconds=replies.LEASE / 2)

    await eventually(anna_held_past_her_lease, timeout=20)
    async with stored_only(app, registered_channel(amocrm)):
        _, to_oleg = await amocrm.chats.reply(f"tg-{oleg.id}", "Ответ Олегу")
    answer = await oleg.reply(timeout=20)
    anna_had = [m.get("text") for m in sandbox.messages(buyer.id, from_bot=True)]
    sandbox.outage("sendMessage", seconds=0, chat_id=buyer.id)  # Anna's chat recovers
    await eventually(lambda: "Ответ Анне" in [m.get("text") for m in sandbox.messages(buyer.id, from_bot=True)], timeout=20)
    await eventually(lambda: statuses(amocrm, conversation, to_anna) != [] and statuses(amocrm, f"tg-{oleg.id}", to_oleg) != [],
                     timeout=20)

    assert answer["text"] == "Ответ Олегу" and "Ответ Анне" not in anna_had
    assert [m.get("text") for m in sandbox.messages(buyer.id, from_bot=True)].count("Ответ Анне") == 1
    assert [m.get("text") for m in sandbox.messages(oleg.id, from_bot=True)].count("Ответ Олегу") == 1
    assert statuses(amocrm, conversation, to_anna) == statuses(amocrm, f"tg-{oleg.id}", to_oleg) == [{"delivery_status": 1}]


async def test_a_buyers_replies_arrive_in_order_when_the_first_was_left_by_an_instance_that_died(
        sandbox: TelegramSandbox, amocrm: AmoSandbox, buyer: Buyer, opened: tuple[App, str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    app, conversation, _ = opened
    monkeypatch.setattr(replies, "LEASE", 1.0)  # 120 s, scaled down
    async with stored_only(app, registered_channel(amocrm)):
        _, first = await amocrm.chats.reply(conversation, "Первый ответ")
    _, second = await amocrm.chats.reply(conversation, "Второй ответ")
    answers = await buyer.replies(2, timeout=20)
    await eventually(lambda: statuses(amocrm, conversation, first) != [] and statuses(amocrm, conversation, second) != [], timeout=20)
    assert [a["text"] for a in answers] == ["Первый ответ", "Второй ответ"]
    assert [m.get("text") for m in sandbox.messages(buyer.id, from_bot=True)].count("Первый ответ") == 1
    assert statuses(amocrm, conversation, first) == statuses(amocrm, conversation, second) == [{"delivery_status": 1}]
