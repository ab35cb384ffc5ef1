"""The durable inbox: an update delivered twice, or to two instances, is handled once; the table keeps what arrived."""
from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, insert, select, text

from bot.catalog.render import CatalogRenderer
from bot.db import updates
from bot.db.base import utcnow
from bot.db.models import Message, TgUpdate
from bot.db.session import Database, open_database
from bot.sandbox.balancer import free_port
from bot.sandbox.telegram import CallRecord, TelegramSandbox
from tests.conftest import REDIS_URL, make_settings, running


def start_update(update_id: int, user_id: int) -> dict[str, object]:
    return {"update_id": update_id, "message": {
        "message_id": update_id, "date": 1767225600, "chat": {"id": user_id, "type": "private", "first_name": "Ann"},
        "from": {"id": user_id, "is_bot": False, "first_name": "Ann"}, "text": "/start",
        "entities": [{"type": "bot_command", "offset": 0, "length": 6}]}}


@pytest.mark.redis  # several instances on one database share Redis (bot.instances)
async def test_an_update_delivered_to_two_instances_is_handled_once(
        sandbox: TelegramSandbox, database_url: str, tmp_path: Path, renderer: CatalogRenderer) -> None:
    ports = [free_port(), free_port()]
    settings = [make_settings(sandbox, database_url, tmp_path / str(port), HTTP_PORT=port, PUBLIC_URL=f"http://127.0.0.1:{port}",
                              REDIS_URL=REDIS_URL) for port in ports]
    users = list(range(8100, 8110))
    for user in users:
        sandbox.add_user(user, "Ann", started=True)
    async with running(settings[0], renderer) as first, running(settings[1], renderer) as second:
        headers = {"X-Telegram-Bot-Api-Secret-Token": first.telegram_secret_token}
        async with httpx.AsyncClient() as client:
            posts = [client.post(f"http://127.0.0.1:{port}/webhooks/telegram", json=start_update(10**6 + user, user), headers=headers)
                     for user in users for port in ports]  # Telegram's retry reached the other instance too
            answers = await asyncio.gather(*posts)
        assert {answer.status_code for answer in answers} == {200}
        for user in users:
            await sandbox.wait_for_messages(user, 2)
        await first.inbox.idle()
        await second.inbox.idle()
        async with first.db() as session:
            logged = (await session.execute(select(Message.tg_chat_id, func.count()).where(Message.direction == "in")
                                            .group_by(Message.tg_chat_id))).all()
            stored = (await session.execute(select(TgUpdate))).scalars().all()
    assert {user: len(sandbox.messages(user, from_bot=True)) for user in users} == {user: 2 for user in users}
    assert dict(logged) == {user: 1 for user in users}
    assert sorted(row.update_id for row in stored) == sorted(10**6 + user for user in users)
    assert all(row.handled_at is not None and row.error is None for row in stored)
    assert json.loads(stored[0].raw)["message"]["text"] == "/start"


async def finished_or_blocked(db: Database, task: asyncio.Task[None]) -> None:
    """Until ``task`` is done or a transaction of ``db``'s database waits for a lock."""
    query = text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
    while not task.done():
        async with db() as session:
            if (await session.execute(query)).scalar_one():
                return
        await asyncio.sleep(0.01)


@pytest.mark.postgres
@pytest.mark.parametrize("taking", ["renewal", "take-over"])
async def test_renewing_or_taking_over_updates_never_deadlocks_with_their_handlers(postgres_url: str, taking: str) -> None:
    """A group commit marks its callers' updates handled one by one, in whatever order they came (here 2, then 1);
    the inbox renewing its leases on both, or another instance taking both over, meanwhile skips the row being
    marked instead of holding one and waiting for the other (PostgreSQL would kill one side: «deadlock detected»)."""
    db = open_database(postgres_url)
    lease_until = utcnow() + timedelta(seconds=60 if taking == "renewal" else -1)
    async with db.begin() as session:
        await session.execute(insert(TgUpdate), [{"update_id": update_id, "chat_id": update_id, "raw": "{}", "attempts": 1,
                                                  "owner": "first", "lease_until": lease_until} for update_id in (1, 2)])

    async def renew_or_take() -> None:
        async with db.begin() as session:
            if taking == "renewal":
                await updates.renew(session, [1, 2], "first", utcnow() + timedelta(seconds=60))
            else:
                await updates.claim(session, "second", utcnow(), utcnow() + timedelta(seconds=60), 10)

    try:
        async with db.begin() as handlers:
            await updates.mark_handled(handlers, [2])
            other = asyncio.create_task(renew_or_take())
            await finished_or_blocked(db, other)
            await updates.mark_handled(handlers, [1])
        await other
        async with db() as session:
            assert await updates.unhandled(session) == 0
    finally:
        await db.close()


def most_at_once(calls: list[CallRecord]) -> int:
    """The most of ``calls`` under way at the sandbox at one moment (one that ended as another began: not together)."""
    edges = sorted([(call.started_at, 1) for call in calls] + [(call.finished_at, -1) for call in calls])
    peak = current = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


async def test_no_more_updates_than_inbox_handling_at_once_are_handled_together(
        sandbox: TelegramSandbox, database_url: str, tmp_path: Path, renderer: CatalogRenderer) -> None:
    """INBOX_HANDLING_AT_ONCE=2 and a burst of six buyers' /start, every sendMessage held a while at Telegram: a handler
    sends its greeting before it returns, so at most two greetings are ever under way at once; every buyer is greeted."""
    users = list(range(8200, 8206))
    for user in users:
        sandbox.add_user(user, "Ann")
        sandbox.send_text(user, "/start")  # waiting at Telegram: the first getUpdates takes them all
    sandbox.set_delay(0.5, method="sendMessage")
    async with running(make_settings(sandbox, database_url, tmp_path, INBOX_HANDLING_AT_ONCE=2), renderer) as app:
        for user in users:
            await sandbox.wait_for_messages(user, 2, timeout=30)
        await app.inbox.idle()
    greetings = [call for call in sandbox.calls if call.method == "sendMessage" and call.chat_id in users]
    assert len(greetings) == 2 * len(users) and all(call.ok for call in greetings)
    assert most_at_once(greetings) <= 2
