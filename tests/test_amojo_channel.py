"""The Chats API channel: signed requests against the sandbox (which refuses what amoCRM refuses), connect / disconnect."""
from __future__ import annotations

import argparse
import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from bot.crm import channel, cli, store
from bot.crm.amojo import AmojoClient, ChannelRefused, encode, request_signature, signed_headers
from bot.crm.config import ClientTuning
from bot.crm.replies import telegram_html
from bot.db.models import Lead
from bot.journal import PHONE_SHARED
from bot.ratelimit import Window
from bot.sandbox.amocrm import AmoSandbox
from tests.crm_support import amocrm, crm_settings, db, make_env, open_db  # noqa: F401  (fixtures)

TUNING = ClientTuning(attempts=2, wait=0.001, wait_max=0.002, timeout=5)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


def channel_settings(sandbox: AmoSandbox, database_url: str, secret: str | None = None):  # type: ignore[no-untyped-def]
    registered = sandbox.chats.register_channel("http://127.0.0.1:9/webhooks/amojo/:scope_id")
    return crm_settings(sandbox, database_url, AMOCRM_CHANNEL_ID=registered.id, AMOCRM_CHANNEL_SECRET=secret or registered.secret,
                        AMOCRM_CHANNEL_CODE=registered.code, AMOJO_BASE_URL=sandbox.base_url)


def test_the_signature_is_the_documented_hmac() -> None:
    now = datetime(2026, 11, 30, 11, 0, tzinfo=timezone.utc)
    body = encode({"account_id": "a", "title": "Т"})
    headers = signed_headers("s3cret", "post", "/v2/origin/custom/ch/connect", body, now)
    assert headers["Date"] == "Mon, 30 Nov 2026 11:00:00 +0000"
    assert headers["Content-Type"] == "application/json"
    assert headers["Content-MD5"] == hashlib.md5(body).hexdigest()
    import hmac
    text = f"POST\n{headers['Content-MD5']}\napplication/json\n{headers['Date']}\n/v2/origin/custom/ch/connect"
    assert headers["X-Signature"] == hmac.new(b"s3cret", text.encode(), hashlib.sha1).hexdigest()
    assert signed_headers("s3cret", "GET", "/x", b"", now)["Content-MD5"] == hashlib.md5(b"").hexdigest()
    assert request_signature("s3cret", "post", "m", "application/json", "d", "/p") == request_signature("s3cret", "POST", "m", "application/json", "d", "/p")


async def test_connect_stores_the_scope_and_disconnect_forgets_it(db, database_url, amocrm, capsys) -> None:  # noqa: F811
    settings = channel_settings(amocrm, database_url)
    assert await cli.connect_channel(settings, argparse.Namespace(title="Telegram")) == 0
    async with db() as session:
        stored = await channel.connected(session)
    assert stored is not None and stored["amojo_id"] == amocrm.chats.amojo_id
    assert stored["scope_id"] in amocrm.chats.scopes
    out = capsys.readouterr().out
    assert f"/webhooks/amojo/{stored['scope_id']}" in out and settings.amocrm_channel_secret.get_secret_value() not in out
    assert amocrm.count(path="/api/v4/account") == 1

    assert await cli.disconnect_channel(settings, argparse.Namespace()) == 0
    async with db() as session:
        assert await channel.connected(session) is None and await store.read(session, store.CHANNEL) == {}
    assert not amocrm.chats.scopes


async def test_a_wrong_secret_is_refused_and_nothing_is_stored(db, database_url, amocrm, capsys) -> None:  # noqa: F811
    settings = channel_settings(amocrm, database_url, secret="not-the-channel-secret")
    assert await cli.connect_channel(settings, argparse.Namespace(title="Telegram")) == 1
    assert "INVALID_SIGNATURE" in capsys.readouterr().out and amocrm.chats.refused == 1
    async with db() as session:
        assert await channel.connected(session) is None


@pytest.mark.parametrize("tamper, refusal", [
    ("md5", "INVALID_CONTENT_MD5"), ("signature", "INVALID_SIGNATURE"), ("date", "SIGNATURE_EXPIRED"), ("type", "INVALID_CONTENT_TYPE"),
])
async def test_the_sandbox_refuses_a_request_amocrm_would_refuse(amocrm, http, tamper: str, refusal: str) -> None:  # noqa: F811
    registered = amocrm.chats.register_channel("http://127.0.0.1:9/:scope_id")
    path = f"/v2/origin/custom/{registered.id}/connect"
    body = encode({"account_id": amocrm.chats.amojo_id, "title": "Telegram", "hook_api_version": "v2"})
    when = datetime.now(timezone.utc) - (timedelta(minutes=16) if tamper == "date" else timedelta(0))
    headers = signed_headers(registered.secret, "POST", path, body, when)
    if tamper == "md5":
        body = body.replace(b"Telegram", b"Telegraf")
    elif tamper == "signature":
        headers["X-Signature"] = headers["X-Signature"][::-1]
    elif tamper == "type":
        headers["Content-Type"] = "text/plain"
    response = await http.post(amocrm.base_url + path, content=body, headers=headers)
    assert response.status_code == 403 and response.json()["error_type"] == refusal
    assert not amocrm.chats.scopes

    fresh = signed_headers(registered.secret, "POST", path, body, datetime.now(timezone.utc) - timedelta(minutes=14))
    ok = await http.post(amocrm.base_url + path, content=body, headers=fresh)
    assert ok.status_code == 200 and ok.json()["scope_id"] in amocrm.chats.scopes


async def test_the_client_says_which_settings_to_check_when_refused(amocrm, http) -> None:  # noqa: F811
    registered = amocrm.chats.register_channel("http://127.0.0.1:9/:scope_id")
    client = AmojoClient(amocrm.base_url, registered.id, "wrong", Window(50), TUNING, http=http)
    with pytest.raises(ChannelRefused, match="AMOCRM_CHANNEL_SECRET"):
        await client.connect(amocrm.chats.amojo_id, "Telegram")


@pytest.mark.parametrize("notes, expected", [(None, []), ("true", ["note"])])
async def test_with_the_channel_messages_are_not_notes_unless_asked(db, database_url, amocrm, notes, expected) -> None:  # noqa: F811
    registered = amocrm.chats.register_channel("http://127.0.0.1:9/:scope_id")
    env = await make_env(db, database_url, amocrm, AMOCRM_CHANNEL_ID=registered.id, AMOCRM_CHANNEL_SECRET=registered.secret,
                         AMOJO_BASE_URL=amocrm.base_url, AMOCRM_MESSAGE_NOTES=notes)
    lead = await env.new_lead(tg_user_id=71, first_name="Анна")
    await env.say(lead.id, "привет")
    assert [item.op for item in await env.items() if item.op == "note"] == expected
    await env.crm.close()


async def channel_env(db, database_url: str, amocrm: AmoSandbox):  # type: ignore[no-untyped-def]  # noqa: F811
    """The sync with the channel on and connected, without Telegram (messages are logged as the bot logs them)."""
    registered = amocrm.chats.register_channel("http://127.0.0.1:9/:scope_id")
    env = await make_env(db, database_url, amocrm, AMOCRM_CHANNEL_ID=registered.id, AMOCRM_CHANNEL_SECRET=registered.secret,
                         AMOJO_BASE_URL=amocrm.base_url)
    await channel.connect(env.db, env.crm.client, env.crm.chats_api, "Telegram")
    return env


async def log(env, lead_id: int, text: str, tg_message_id: int, direction: str = "in") -> None:  # type: ignore[no-untyped-def]
    async with env.db.begin() as session:
        lead = await session.get(Lead, lead_id)
        await env.journal.message(session, lead, direction=direction, author="buyer" if direction == "in" else "bot",
                                  author_name="Анна" if direction == "in" else None, text=text, tg_chat_id=lead.tg_user_id,
                                  tg_message_id=tg_message_id)


async def chat_started(db, database_url: str, amocrm: AmoSandbox, tg_user_id: int, name: str):  # type: ignore[no-untyped-def]  # noqa: F811
    """A buyer known only by Telegram said «здравствуйте»: their chat exists, linked."""
    env = await channel_env(db, database_url, amocrm)
    lead = await env.new_lead(tg_user_id=tg_user_id, first_name=name)
    await log(env, lead.id, "здравствуйте", 1)
    await env.drain()
    return env, lead


async def test_a_chats_api_outage_loses_and_duplicates_nothing(db, database_url, amocrm) -> None:  # noqa: F811
    """A minute without the Chats API (the sandbox's outage switch, the clock moved 60 s) and an answer lost on the way."""
    env = await channel_env(db, database_url, amocrm)
    lead = await env.new_lead(tg_user_id=72, first_name="Анна", phone="+79990000072")
    await log(env, lead.id, "первое", 1)
    await env.drain()
    assert amocrm.chats.transcript("tg-72") == ["← Анна: первое"]

    amocrm.chats.outage = True
    for number, text in enumerate(["второе", "третье", "четвёртое"], start=2):
        await log(env, lead.id, text, number, direction="in" if number != 3 else "out")
    await env.drain()
    assert amocrm.chats.transcript("tg-72") == ["← Анна: первое"]
    assert {item.state for item in await env.items(op="chat") if item.state != "done"} == {"retry"}

    env.clock.advance(60)
    amocrm.chats.outage = False
    amocrm.inject(500, path="/v2/origin/custom/", after=True)  # the first message after it gets through, its answer does not
    for _ in range(4):
        env.clock.advance(30)
        await env.drain()
    assert amocrm.chats.transcript("tg-72") == ["← Анна: первое", "← Анна: второе", "→ optobot: третье", "← Анна: четвёртое"]
    assert {item.state for item in await env.items(op="chat")} == {"done"}
    assert amocrm.chats.unsorted == []
    await env.crm.close()


async def test_two_instances_draining_at_once_put_each_message_in_the_chat_once_in_order(db, database_url, amocrm) -> None:  # noqa: F811
    """Two instances (each its own engine) run the chat's rounds at the same moments: every buyer's messages are in
    their amoCRM chat once, in the order written."""
    registered = amocrm.chats.register_channel("http://127.0.0.1:9/:scope_id")
    channel_on = {"AMOCRM_CHANNEL_ID": registered.id, "AMOCRM_CHANNEL_SECRET": registered.secret, "AMOJO_BASE_URL": amocrm.base_url}
    first = await make_env(db, database_url, amocrm, **channel_on)
    await channel.connect(first.db, first.crm.client, first.crm.chats_api, "Telegram")
    other_db = await open_db(database_url)
    second = await make_env(other_db, database_url, amocrm, clock=first.clock, **channel_on)
    try:
        leads = [await first.new_lead(tg_user_id=80 + index, first_name=f"Покупатель{index}") for index in range(6)]
        await asyncio.gather(first.drain(), second.drain())
        for number in range(1, 4):
            for lead in leads:
                await log(first if lead.id % 2 else second, lead.id, f"{lead.id}: {number}", number)
            while sum(await asyncio.gather(first.crm.worker.run_chats_once(), second.crm.worker.run_chats_once())):
                pass
    finally:
        await second.crm.close()
        await other_db.close()
        await first.crm.close()
    assert {lead.id: amocrm.chats.transcript(f"tg-{lead.tg_user_id}") for lead in leads} == {
        lead.id: [f"← {lead.first_name}: {lead.id}: {number}" for number in range(1, 4)] for lead in leads}
    [scope] = amocrm.chats.scopes
    sent = [seen for seen in amocrm.requests if seen.method == "POST" and seen.path == f"/v2/origin/custom/{scope}"]
    assert len(sent) == 3 * len(leads)  # none sent twice (amoCRM would only drop the repeat)


async def test_a_buyer_known_only_by_telegram_gets_a_contact_on_their_deal_before_the_chat(db, database_url, amocrm) -> None:  # noqa: F811
    env, lead = await chat_started(db, database_url, amocrm, 73, "Олег")
    fresh = await env.lead(lead.id)
    chat = amocrm.chats.chat("tg-73")
    assert fresh.crm_contact_id is not None and chat.contact_id == fresh.crm_contact_id
    assert amocrm.account.leads[fresh.crm_lead_id]["contacts"] == [fresh.crm_contact_id]
    assert amocrm.chats.unsorted == [] and amocrm.chats.transcript("tg-73") == ["← Олег: здравствуйте"]
    await env.crm.close()


async def test_the_chats_profile_follows_the_buyer(db, database_url, amocrm) -> None:  # noqa: F811
    env, lead = await chat_started(db, database_url, amocrm, 76, "Олег")
    before = dict(amocrm.chats.chat("tg-76").user)
    async with env.db.begin() as session:
        fresh = await session.get(Lead, lead.id)
        fresh.first_name, fresh.last_name, fresh.phone = "Олег", "Иванов", "+79990000076"
    await log(env, lead.id, "мой телефон выше", 2)
    await env.drain()
    after = amocrm.chats.chat("tg-76").user
    assert (before["name"], before.get("phone")) == ("Олег", None)
    assert (after["name"], after["phone"], after["id"]) == ("Олег Иванов", "+79990000076", before["id"])
    await env.crm.close()


async def test_a_merge_moves_the_chat_to_the_contact_the_buyer_keeps(db, database_url, amocrm) -> None:  # noqa: F811
    """The buyer's chat sits on the contact made for them; their phone then finds a manager's contact: the chat follows."""
    env, lead = await chat_started(db, database_url, amocrm, 75, "Аня")
    made = (await env.lead(lead.id)).crm_contact_id
    assert made is not None and amocrm.chats.chat("tg-75").contact_id == made
    [contact] = amocrm.account.add_contacts([{"name": "Анна (опт)", "custom_fields_values": [
        {"field_code": "PHONE", "values": [{"value": "+79990000075", "enum_code": "WORK"}]}]}])

    async with env.db.begin() as session:
        fresh = await session.get(Lead, lead.id)
        fresh.phone = "+79990000075"
        await env.journal.event(session, fresh, PHONE_SHARED, phone=fresh.phone)
    await env.drain()
    assert (await env.lead(lead.id)).crm_contact_id == contact["id"]
    assert amocrm.chats.chat("tg-75").contact_id == contact["id"]  # at once, not at the buyer's next message

    await log(env, lead.id, "а опт от 10 пар?", 2)
    await env.drain()
    assert amocrm.chats.chat("tg-75").contact_id == contact["id"] and amocrm.chats.unsorted == []
    assert amocrm.chats.transcript("tg-75") == ["← Аня: здравствуйте", "← Аня: а опт от 10 пар?"]
    await env.crm.close()


async def test_without_a_connected_channel_chat_items_wait_and_other_work_goes_on(db, database_url, amocrm) -> None:  # noqa: F811
    registered = amocrm.chats.register_channel("http://127.0.0.1:9/:scope_id")
    env = await make_env(db, database_url, amocrm, AMOCRM_CHANNEL_ID=registered.id, AMOCRM_CHANNEL_SECRET=registered.secret,
                         AMOJO_BASE_URL=amocrm.base_url)
    lead = await env.new_lead(tg_user_id=74, first_name="Анна")
    await log(env, lead.id, "привет", 1)
    await env.drain()
    assert (await env.lead(lead.id)).crm_lead_id is not None
    assert [item.state for item in await env.items(op="chat")] == ["pending"]
    await channel.connect(env.db, env.crm.client, env.crm.chats_api, "Telegram")
    await env.drain()
    assert amocrm.chats.transcript("tg-74") == ["← Анна: привет"]
    await env.crm.close()


def test_amocrm_marks_become_safe_telegram_html() -> None:
    assert telegram_html("*Анна*, _курсив_ snake_case ~нет~ `SH-101` <script>") == (
        "<b>Анна</b>, <i>курсив</i> snake_case <s>нет</s> <code>SH-101</code> &lt;script&gt;")
    assert telegram_html("*a _b* c_") == "*a _b* c_"  # overlapping marks: plain text, never a message Telegram refuses
