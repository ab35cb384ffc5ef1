"""kill -9 of a real ``optobot run`` once Telegram has handed over every update, then a restart: every buyer
message is logged once, every greeted buyer has a lead, nobody is greeted twice (defect 1 of issue 9)."""
from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from bot.catalog.render import CatalogRenderer
from bot.config import PROJECT_DIR
from bot.db import updates
from bot.db.base import utcnow
from bot.db.models import Lead, Message, TgSend
from bot.db.session import open_database
from bot.sandbox.telegram import TelegramSandbox
from tests.buyer import Buyer
from tests.conftest import SECRET, TOKEN, make_settings, running

BUYERS = 30
MESSAGES = 19  # each after its /start
GREETING = "Я помощник оптового отдела"


async def until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    """Wait for ``condition()`` (a coroutine function) to hold, checking every 0.1 s."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def greetings(sandbox: TelegramSandbox, user_id: int) -> int:
    return sum(GREETING in (message.get("text") or "") for message in sandbox.messages(user_id, from_bot=True))


async def unhandled_in(database_url: str) -> int:
    db = open_database(database_url)
    try:
        async with db() as session:
            return await updates.unhandled(session)
    finally:
        await db.close()


async def greeting_waits(database_url: str, at_least: float) -> bool:
    """Whether the first recorded send waits for a try at least ``at_least`` seconds away."""
    db = open_database(database_url)
    try:
        async with db() as session:
            first = (await session.execute(select(TgSend).order_by(TgSend.id).limit(1))).scalar_one_or_none()
    finally:
        await db.close()
    return (first is not None and first.state == "waiting" and first.not_before is not None
            and first.not_before > utcnow() + timedelta(seconds=at_least))


async def test_a_killed_service_loses_no_update_and_greets_nobody_twice(
        sandbox: TelegramSandbox, database_url: str, tmp_path: Path, renderer: CatalogRenderer) -> None:
    env = {**os.environ, "BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": sandbox.base_url, "DATABASE_URL": database_url,
           "DATA_DIR": str(tmp_path / "first"), "HTTP_PORT": "0", "WEBHOOK_SECRET": SECRET, "RENDER_WORKERS": "1",
           "REPORT_SCHEDULE": "off", "LOG_LEVEL": "WARNING", "PYTHONPATH": str(PROJECT_DIR)}
    env.pop("PUBLIC_URL", None)
    # its own process group: the kill takes its render workers too, as a crashed container would
    service = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "run", cwd=tmp_path, env=env, start_new_session=True)
    try:
        async def polling() -> bool:
            assert service.returncode is None, "optobot run exited"
            return any(call.method == "getUpdates" for call in sandbox.calls)

        await until(polling, 120, "optobot run to poll")
        sandbox.set_delay(0.1, method="sendMessage")  # replies are under way when the kill lands
        buyers = [Buyer(sandbox, user_id=7000 + index, first_name=f"Покупатель{index}") for index in range(BUYERS)]
        for buyer in buyers:
            buyer.send("/start")
        for number in range(MESSAGES):
            for buyer in buyers:
                buyer.send(f"сообщение {number}")

        async def handed_over() -> bool:
            return sandbox.pending_updates == 0

        await until(handed_over, 120, "the service to take every update")
    finally:
        os.killpg(service.pid, signal.SIGKILL)
        await service.wait()
    assert service.returncode == -signal.SIGKILL
    sandbox.set_delay(0, method="sendMessage")
    left = await unhandled_in(database_url)
    assert left > 0, "the kill came after every update was handled: nothing was left to replay"

    settings = make_settings(sandbox, database_url, tmp_path / "second")
    async with running(settings, renderer) as app:
        async def all_handled() -> bool:
            async with app.db() as session:
                return await updates.unhandled(session) == 0

        await until(all_handled, 240, "the restarted service to handle what was left")
        await app.inbox.idle()
        async with app.db() as session:
            logged = (await session.execute(select(Message.tg_chat_id, Message.tg_message_id).where(Message.direction == "in"))).all()
            leads = {lead.tg_user_id: lead for lead in (await session.execute(select(Lead))).scalars()}

    per_message = Counter(logged)
    assert len(per_message) == BUYERS * (MESSAGES + 1), f"{len(per_message)} of {BUYERS * (MESSAGES + 1)} buyer messages logged"
    assert set(per_message.values()) == {1}, [key for key, times in per_message.items() if times > 1][:5]
    for buyer in buyers:
        greeted = greetings(sandbox, buyer.id)
        assert greeted <= 1, (buyer.id, greeted)
        if greeted:
            assert buyer.id in leads and leads[buyer.id].greeted_at is not None, buyer.id


async def test_a_greeting_waiting_out_an_outage_is_sent_after_a_restart(
        sandbox: TelegramSandbox, database_url: str, tmp_path: Path, renderer: CatalogRenderer) -> None:
    buyer = Buyer(sandbox, user_id=7500, first_name="Анна")
    env = {**os.environ, "BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": sandbox.base_url, "DATABASE_URL": database_url,
           "DATA_DIR": str(tmp_path / "first"), "HTTP_PORT": "0", "WEBHOOK_SECRET": SECRET, "RENDER_WORKERS": "1",
           "REPORT_SCHEDULE": "off", "LOG_LEVEL": "ERROR", "PYTHONPATH": str(PROJECT_DIR)}
    env.pop("PUBLIC_URL", None)
    sandbox.outage("sendMessage", seconds=600)  # Telegram answers 502 to every sendMessage
    service = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "run", cwd=tmp_path, env=env, start_new_session=True)
    try:
        buyer.send("/start")

        async def waiting_out() -> bool:
            """Refused twice, and the record says the greeting waits for its next try (not in flight): killed now,
            it is not a greeting that may have reached the buyer, which would rightly never be repeated."""
            assert service.returncode is None, "optobot run exited"
            if sum(call.method == "sendMessage" and not call.ok for call in sandbox.calls) < 2:
                return False
            return await greeting_waits(database_url, at_least=0.3)

        await until(waiting_out, 120, "the service to try the greeting through the outage")
    finally:
        os.killpg(service.pid, signal.SIGKILL)
        await service.wait()
    sandbox.outage("sendMessage", seconds=0)  # Telegram is back

    async with running(make_settings(sandbox, database_url, tmp_path / "second"), renderer) as app:
        await buyer.replies(2, timeout=120)  # taken over once the dead instance's lease ran out
        await app.sender.flushed()
        async with app.db() as session:
            states = (await session.execute(select(TgSend.state))).scalars().all()
            lead = (await session.execute(select(Lead))).scalar_one()
    assert greetings(sandbox, buyer.id) == 1 and states == ["sent", "sent"]
    assert lead.greeted_at is not None and len(sandbox.messages(buyer.id, from_bot=True)) == 2
