"""kill -9 of a real ``optobot run`` while a manager's reply from amoCRM waits out a Telegram outage, then a restart: the
buyer gets the reply once (issue 13: the sender's take-over sent it, and the replies loop sent a second copy)."""
from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from bot.catalog.render import CatalogRenderer
from bot.config import PROJECT_DIR
from bot.crm import chats, replies
from bot.crm.models import DONE, PENDING, SENDING, AmojoReply
from bot.db import sends
from bot.db.models import Lead, Message, TgSend
from bot.db.base import utcnow
from bot.db.session import open_database
from bot.journal import LEAD_CREATED
from bot.sandbox.amocrm import AmoSandbox
from bot.sandbox.balancer import free_port
from bot.sandbox.telegram import TelegramSandbox
from tests.amojo_support import channel_settings, connect
from tests.buyer import Buyer
from tests.conftest import SECRET, TOKEN
from tests.relay_support import OPERATORS, known_lead, running
from tests.crm_support import amocrm  # noqa: F401  (the sandbox's fixture)
from tests.test_amojo_chat import statuses
from tests.test_cli import environment
from tests.test_inbox_crash import until

ANSWER = "Да, работаем с ИП"


async def answer_waits(database_url: str) -> bool:
    """Whether the answer's record waits for its next try (refused by Telegram, not in flight)."""
    db = open_database(database_url)
    try:
        async with db() as session:
            record = (await session.scalars(select(TgSend).where(TgSend.text == ANSWER))).one_or_none()
    finally:
        await db.close()
    return record is not None and record.state == "waiting" and record.not_before is not None and record.not_before > utcnow()


async def test_a_reply_whose_instance_died_waiting_out_telegram_reaches_the_buyer_once(
        sandbox: TelegramSandbox, amocrm: AmoSandbox, database_url: str, tmp_path: Path, renderer: CatalogRenderer,  # noqa: F811
        buyer: Buyer, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    settings, registered = channel_settings(sandbox, amocrm, database_url, tmp_path, HTTP_PORT=port)
    conversation = f"tg-{buyer.id}"
    async with running(settings, renderer) as app:  # the channel connected; the buyer's amoCRM chat opened by a question
        await connect(app, registered)
        lead = await known_lead(app, buyer, crm_lead_id=None, responsible_user_id=None)
        async with app.db.begin() as session:
            await app.journal.event(session, await session.get(Lead, lead.id), LEAD_CREATED, via="telegram")
        buyer.send("Скажите, работаете с ИП?")
        await buyer.reply()  # «thanks»

        async def chat_open() -> bool:
            return amocrm.chats.chat(conversation) is not None

        await until(chat_open, 30, "the buyer's amoCRM chat")

    env = {**environment(tmp_path, DATA_DIR=str(tmp_path / "killed")), "BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": sandbox.base_url,
           "DATABASE_URL": database_url, "WEBHOOK_SECRET": SECRET, "HTTP_PORT": str(port), "REPORT_SCHEDULE": "off",
           "LOG_LEVEL": "ERROR", "PYTHONPATH": str(PROJECT_DIR), "OPERATOR_CHAT_ID": str(OPERATORS),
           "OPERATORS_CONFIG": str(settings.operators_config), "WORKING_HOURS": "00:00-24:00", "WORKING_DAYS": "1-7",
           "AMOCRM_BASE_URL": amocrm.base_url, "AMOCRM_ACCESS_TOKEN": amocrm.long_lived_token, "AMOCRM_CHANNEL_ID": registered.id,
           "AMOCRM_CHANNEL_SECRET": registered.secret, "AMOJO_BASE_URL": amocrm.base_url}
    sandbox.outage("sendMessage", seconds=600)  # Telegram answers 502 to every sendMessage
    service = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "run", cwd=tmp_path, env=env, start_new_session=True)
    try:
        async def serving() -> bool:
            assert service.returncode is None, "optobot run exited"
            async with httpx.AsyncClient() as client:
                try:
                    return (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

        await until(serving, 120, "optobot run to serve")
        status, message_id = await amocrm.chats.reply(conversation, ANSWER)
        assert status == 200
        await until(lambda: answer_waits(database_url), 60, "the answer to wait out the outage")
    finally:
        os.killpg(service.pid, signal.SIGKILL)
        await service.wait()
    sandbox.outage("sendMessage", seconds=0)  # Telegram is back

    monkeypatch.setattr(replies, "LEASE", 0.0)  # the dead instance's claim on the reply runs out at once
    async with running(settings, renderer) as app:
        async def settled() -> bool:
            async with app.db() as session:
                reply = (await session.scalars(select(AmojoReply))).one()
                return reply.state == DONE and await sends.count(session, "waiting") + await sends.count(session, "sending") == 0

        await until(settled, 60, "the reply to be delivered and no send pending")
        await app.sender.flushed()
        async with app.db() as session:
            record = (await session.scalars(select(TgSend).where(TgSend.text == ANSWER))).all()
            logged = (await session.scalars(select(Message).where(Message.direction == "out", Message.text == ANSWER))).all()
            reply = (await session.scalars(select(AmojoReply))).one()

        async def status_back() -> bool:
            return statuses(amocrm, conversation, message_id) != []

        await until(status_back, 30, "the delivery status in amoCRM")

    assert [m.get("text") for m in sandbox.messages(buyer.id, from_bot=True)].count(ANSWER) == 1
    assert [(r.id, r.state) for r in record] == [(reply.send_id, "sent")]
    assert [(m.author, m.author_name) for m in logged] == [("manager", "Мария Соколова")]  # once, as the manager's
    assert statuses(amocrm, conversation, message_id) == [{"delivery_status": 1}]


async def test_a_claimed_reply_is_not_claimed_again_before_its_lease_runs_out(database_url: str) -> None:
    """Two instances' replies loops: the one that claims a reply holds it (the claim is written) for the lease."""
    db = open_database(database_url)
    try:
        async with db.begin() as session:
            session.add(AmojoReply(message_id="m-1", conversation_id="tg-1", payload={}, state=PENDING))
        claimed = await chats.claim_replies(db, utcnow(), replies.LEASE)
        again = await chats.claim_replies(db, utcnow(), replies.LEASE)
        async with db() as session:
            stored = (await session.scalars(select(AmojoReply))).one()
    finally:
        await db.close()
    assert [reply.message_id for reply in claimed] == ["m-1"] and again == []
    assert stored.state == SENDING and stored.claimed_at == claimed[0].claimed_at


async def test_two_instances_claiming_at_once_take_each_reply_once(database_url: str) -> None:
    """Two instances' replies loops (each its own engine) claim at the same moments: every reply is taken by one."""
    first, second = open_database(database_url), open_database(database_url)
    try:
        async with first.begin() as session:
            session.add_all(AmojoReply(message_id=f"m-{number}", conversation_id=f"tg-{number}", payload={}, state=PENDING)
                            for number in range(12))
        now = utcnow()
        rounds = await asyncio.gather(*(chats.claim_replies(db, now, replies.LEASE, limit=4) for db in (first, second, first, second)))
    finally:
        await first.close()
        await second.close()
    taken = sorted(reply.message_id for claimed in rounds for reply in claimed)
    assert taken == sorted(f"m-{number}" for number in range(12))
