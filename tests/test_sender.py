"""Greetings that outlive a Telegram outage (issue 9, defect 2): 5xx retried with back-off, 429 waited out for
exactly ``retry_after``, given up only after ``SEND_RETRY_FOR``; a final refusal stops at once."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.catalog.render import CatalogRenderer
from bot.db import sends
from bot.db.models import Lead, TgSend
from bot.db.session import database
from bot.sandbox.telegram import TelegramSandbox
from bot.sender import SERVICE, Sender
from bot.telegram import create_bot
from tests.buyer import Buyer
from tests.conftest import TOKEN, make_settings, running

BUYERS = 20
GREETING = "Я помощник оптового отдела"
# The outage lasts until every buyer's greeting was refused at least once (seconds under a quiet machine): the retry
# window is the real one (SEND_RETRY_FOR, 10 minutes), only the outage is shorter than the 30 s.


async def until(condition, what: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def refused(sandbox: TelegramSandbox, user_id: int) -> bool:
    return any(call.method == "sendMessage" and not call.ok and call.chat_id == user_id for call in sandbox.calls)


def greeted(sandbox: TelegramSandbox, user_id: int) -> int:
    return sum(GREETING in (message.get("text") or "") for message in sandbox.messages(user_id, from_bot=True))


@pytest.mark.parametrize("error_code", [502, 429])
async def test_every_greeting_is_delivered_once_after_an_outage(
        sandbox: TelegramSandbox, database_url: str, tmp_path: Path, renderer: CatalogRenderer, error_code: int) -> None:
    buyers = [Buyer(sandbox, user_id=9000 + index, first_name=f"Покупатель{index}") for index in range(BUYERS)]
    async with running(make_settings(sandbox, database_url, tmp_path), renderer) as app:
        sandbox.outage("sendMessage", seconds=600, error_code=error_code, retry_after=1 if error_code == 429 else None)
        for buyer in buyers:
            buyer.send("/start")
        await until(lambda: all(refused(sandbox, buyer.id) for buyer in buyers), "every greeting to be refused once")
        sandbox.outage("sendMessage", seconds=0)  # Telegram is back
        for buyer in buyers:
            await buyer.replies(2, timeout=120)  # the intro and the first question, once the outage is over
        await app.inbox.idle()
        await app.sender.flushed()
        async with app.db() as session:
            rows = (await session.execute(select(TgSend))).scalars().all()
    assert {call.error_code for call in sandbox.calls if call.method == "sendMessage" and not call.ok} == {error_code}
    assert {buyer.id: greeted(sandbox, buyer.id) for buyer in buyers} == {buyer.id: 1 for buyer in buyers}
    assert {row.state for row in rows} == {"sent"} and len(rows) == 2 * BUYERS
    assert {row.chat_id for row in rows if row.attempts > 1} == {buyer.id for buyer in buyers}  # each retried
    if error_code == 429:  # waited out for exactly retry_after: no call of a chat came sooner than 1 s after its 429
        for buyer in buyers:
            calls = [call for call in sandbox.calls if call.method == "sendMessage" and call.chat_id == buyer.id]
            for before, after in zip(calls, calls[1:]):
                if not before.ok:
                    assert after.started_at - before.finished_at >= 0.99, (buyer.id, after.started_at - before.finished_at)


async def test_a_greeting_is_given_up_after_send_retry_for(
        sandbox: TelegramSandbox, database_url: str, tmp_path: Path, renderer: CatalogRenderer, buyer: Buyer) -> None:
    async with running(make_settings(sandbox, database_url, tmp_path, SEND_RETRY_FOR=1.5), renderer) as app:
        sandbox.outage("sendMessage", seconds=60)  # longer than the window; ended once the greeting is given up
        buyer.send("/start")

        async def given_up() -> bool:
            async with app.db() as session:
                return await sends.count(session, "failed") >= 1

        deadline = asyncio.get_running_loop().time() + 30
        while not await given_up():
            assert asyncio.get_running_loop().time() < deadline, "the greeting was never given up"
            await asyncio.sleep(0.1)
        sandbox.outage("sendMessage", seconds=0)
        await app.inbox.idle()
        async with app.db() as session:
            row = (await session.execute(select(TgSend).order_by(TgSend.id))).scalars().first()
            lead = (await session.execute(select(Lead))).scalar_one()
    assert row.state == "failed" and row.error.startswith("gave up: TelegramServerError") and row.attempts >= 2
    assert lead.greeted_at is not None  # the visit is recorded; the managers see the lead
    assert sandbox.messages(buyer.id, from_bot=True) == []


async def test_a_blocked_buyer_is_not_retried(app, sandbox: TelegramSandbox, buyer: Buyer) -> None:  # type: ignore[no-untyped-def]
    buyer.send("/start")
    await buyer.replies(2)
    sandbox.set_delay(0.5, method="sendMessage")  # the buyer blocks the bot while the answer is on its way
    buyer.send("Есть размер 42?")
    sandbox.block(buyer.id)

    async def flagged() -> bool:
        async with app.db() as session:
            return (await session.execute(select(Lead.is_blocked))).scalar_one()

    deadline = asyncio.get_running_loop().time() + 15
    while not await flagged():
        assert asyncio.get_running_loop().time() < deadline, "the buyer was not flagged"
        await asyncio.sleep(0.1)
    await app.inbox.idle()
    async with app.db() as session:
        failed = (await session.execute(select(TgSend).where(TgSend.state == "failed"))).scalars().all()
    assert len(failed) == 1 and failed[0].attempts == 1 and "blocked" in failed[0].error


async def test_a_greeting_whose_answer_was_lost_is_unknown_and_a_service_message_is_sent_again(
        app, sandbox: TelegramSandbox, buyer: Buyer) -> None:  # type: ignore[no-untyped-def]
    """The connection drops after the request left (no answer): the greeting's intro, which reached the buyer, is
    recorded ``unknown`` and not sent again; a service message in the same case (here lost before Telegram took it)
    is sent again, and arrives."""
    sandbox.drop_next("sendMessage", chat_id=buyer.id)  # the intro is delivered, its answer lost
    buyer.send("/start")
    intro, question = await buyer.replies(2)
    sandbox.drop_next("sendMessage", executed=False, chat_id=buyer.id)  # the phone's confirmation never got there
    buyer.share_phone("+79990001122")
    confirmation, _ = await buyer.replies(2)
    await app.inbox.idle()
    await app.sender.flushed()
    async with app.db() as session:
        rows = (await session.execute(select(TgSend).order_by(TgSend.id))).scalars().all()

    assert [(row.kind, row.state, row.attempts) for row in rows] == [
        ("greeting", "unknown", 1), ("greeting", "sent", 1), ("service", "sent", 2), ("service", "sent", 1)]
    assert "ServerDisconnectedError" in rows[0].error and rows[0].text == intro["text"]
    assert rows[2].text == confirmation["text"] and "+79990001122" in confirmation["text"]
    texts = [message["text"] for message in sandbox.messages(buyer.id, from_bot=True)]
    assert texts == [intro["text"], question["text"], confirmation["text"], texts[3]]  # nothing twice, nothing lost
    assert sum(call.method == "sendMessage" and call.chat_id == buyer.id for call in sandbox.calls) == 5


async def test_the_catalogue_outlives_an_outage(app, sandbox: TelegramSandbox, buyer: Buyer) -> None:  # type: ignore[no-untyped-def]
    """A tap on «catalogue» while Telegram answers 502 to every upload: the PDF and the price list arrive once it is back."""
    from tests.test_journey_catalog import arrive

    await arrive(app, buyer)
    sandbox.outage("sendDocument", seconds=600)
    sandbox.outage("sendChatAction", seconds=600)  # a hint only: it must not stop the catalogue
    buyer.click("каталог")
    await until(lambda: any(call.method == "sendDocument" and not call.ok for call in sandbox.calls), "the upload to be refused")
    sandbox.outage("sendDocument", seconds=0)
    document, price_list, offer = await buyer.replies(3, timeout=60)

    assert document["document"]["mime_type"] == "application/pdf" and price_list["document"]["file_name"].endswith(".xlsx")
    assert "тестовая партия" in offer["text"].lower()
    await app.inbox.idle()
    assert len(sandbox.messages(buyer.id, from_bot=True)) == 4  # greeting, PDF, price list, offer: nothing twice, no apology


async def test_a_managers_answer_outlives_an_outage(sandbox: TelegramSandbox, database_url: str, tmp_path: Path,
                                                    renderer: CatalogRenderer, buyer: Buyer) -> None:
    """A manager answers while Telegram answers 502 to every copy into the buyer's chat: the answer arrives once, after."""
    from tests.relay_support import IVAN, OPERATORS, Team, open_topic, relay_settings

    async with running(relay_settings(sandbox, database_url, tmp_path), renderer) as app:
        team = Team(sandbox)
        thread = (await open_topic(app, buyer, team)).thread
        seen = len(sandbox.messages(buyer.id, from_bot=True))
        sandbox.outage("copyMessage", seconds=600)
        team.say(IVAN, thread, "Добрый день! Пришлю прайс через минуту.")
        # longer than the inbox's own retries of a failed update (3 tries in all): only the send's rule gets it through
        await until(lambda: sum(call.method == "copyMessage" and not call.ok for call in sandbox.calls) >= 4,
                    "the copy to be refused four times")
        sandbox.outage("copyMessage", seconds=0)
        await sandbox.wait_for_messages(buyer.id, seen + 1, timeout=60)
        await app.inbox.idle()

    answers = [m for m in sandbox.messages(buyer.id, from_bot=True) if m.get("text") == "Добрый день! Пришлю прайс через минуту."]
    assert len(answers) == 1
    assert not [m for m in sandbox.messages(OPERATORS, from_bot=True) if "Не отправлено" in (m.get("text") or "")]


async def test_two_instances_taking_over_a_dead_ones_sends_deliver_each_once_in_order(
        sandbox: TelegramSandbox, database_url: str) -> None:
    """The sends of an instance that died (its lease ran out) go to whichever instance claims them: two instances
    (each its own engine) taking over at once deliver every message once, each chat's in order."""
    buyers = [Buyer(sandbox, user_id=9100 + index, first_name=f"Покупатель{index}", started=True) for index in range(6)]
    texts = [f"Сообщение {number}" for number in range(4)]
    bots = [create_bot(TOKEN, sandbox.base_url) for _ in range(3)]
    try:
        async with database(database_url) as one, database(database_url) as two:
            dead = Sender(bots[0], one, retry_for=600, lease=0.0)  # its leases have run out
            async with one.begin() as session:
                for buyer in buyers:
                    await dead.stage(session, None, buyer.id, [(text, None) for text in texts], SERVICE)
            first, second = Sender(bots[1], one, retry_for=600), Sender(bots[2], two, retry_for=600)
            await asyncio.gather(first.resume.once(), second.resume.once(), first.resume.once(), second.resume.once())
            await asyncio.gather(first.flushed(), second.flushed())
            async with one() as session:
                rows = (await session.execute(select(TgSend))).scalars().all()
    finally:
        for bot in bots:
            await bot.session.close()
    assert {buyer.id: [m.get("text") for m in sandbox.messages(buyer.id, from_bot=True)] for buyer in buyers} == {
        buyer.id: texts for buyer in buyers}
    assert {(row.state, row.owner != dead.owner) for row in rows} == {("sent", True)} and len(rows) == 6 * 4


async def test_settled_sends_and_handled_updates_are_forgotten_after_a_week(
        sandbox: TelegramSandbox, database_url: str, tmp_path: Path, renderer: CatalogRenderer) -> None:
    from datetime import timedelta

    from bot.db.base import utcnow
    from bot.db.models import TgUpdate
    from bot.db.session import database

    old, fresh = utcnow() - timedelta(days=8), utcnow()
    far = fresh + timedelta(days=30)
    async with database(database_url) as db, db.begin() as session:
        session.add_all([
            TgSend(kind="service", chat_id=1, text="old, sent", state="sent", deadline=old, created_at=old),
            TgSend(kind="service", chat_id=1, text="old, unknown", state="unknown", deadline=old, created_at=old),
            TgSend(kind="service", chat_id=2, text="old, still waiting", state="waiting", deadline=far, created_at=old,
                   owner="someone", lease_until=far),
            TgSend(kind="service", chat_id=3, text="fresh, sent", state="sent", deadline=fresh, created_at=fresh),
            TgUpdate(update_id=10**9, chat_id=1, raw="{}", received_at=old, handled_at=old, attempts=1),
            TgUpdate(update_id=10**9 + 1, chat_id=1, raw="{}", received_at=fresh, handled_at=fresh, attempts=1),
        ])

    async def kept() -> tuple[set[str], set[int]]:
        async with app.db() as session:
            texts = set((await session.execute(select(TgSend.text))).scalars())
            update_ids = set((await session.execute(select(TgUpdate.update_id).where(TgUpdate.update_id >= 10**9))).scalars())
        return texts, update_ids

    async with running(make_settings(sandbox, database_url, tmp_path), renderer) as app:  # an instance prunes as it starts
        deadline = asyncio.get_running_loop().time() + 30
        while await kept() != ({"old, still waiting", "fresh, sent"}, {10**9 + 1}):
            assert asyncio.get_running_loop().time() < deadline, f"not pruned: {await kept()}"
            await asyncio.sleep(0.1)
