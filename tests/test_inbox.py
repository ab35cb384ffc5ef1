"""The durable inbox: an update delivered twice, or to two instances, is handled once; the table keeps what arrived."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from bot.catalog.render import CatalogRenderer
from bot.db.models import Message, TgUpdate
from bot.sandbox.balancer import free_port
from bot.sandbox.telegram import TelegramSandbox
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
