"""``PUBLIC_URL`` set: Telegram delivers updates by webhook, guarded by a secret token."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
from sqlalchemy import select

from bot.catalog.render import CatalogRenderer
from bot.db.models import Lead
from bot.sandbox.balancer import free_port
from bot.sandbox.telegram import TelegramSandbox
from tests.buyer import Buyer
from tests.conftest import make_settings, running


async def test_updates_arrive_by_webhook_with_the_secret_token(sandbox: TelegramSandbox, sqlite_url: str, tmp_path: Path,
                                                               renderer: CatalogRenderer, buyer: Buyer) -> None:
    port = free_port()
    settings = make_settings(sandbox, sqlite_url, tmp_path, HTTP_PORT=port, PUBLIC_URL=f"http://127.0.0.1:{port}")
    async with running(settings, renderer) as app:
        webhook = (await sandbox.wait_for_call("setWebhook")).params
        assert webhook["url"] == f"http://127.0.0.1:{port}/webhooks/telegram"
        assert webhook["secret_token"] == app.telegram_secret_token
        buyer.send("/start")
        intro, question = await buyer.replies(2)
        assert question["text"].startswith("Вопрос 1 из 4")

        async with httpx.AsyncClient() as client:  # a forged update without the secret token is refused
            forged = await client.post(webhook["url"], json={"update_id": 1, "message": {}})
        assert forged.status_code == 401


async def test_malformed_updates_with_the_right_secret_get_400_and_a_dirty_name_is_cleaned(
        sandbox: TelegramSandbox, database_url: str, tmp_path: Path, renderer: CatalogRenderer, caplog) -> None:
    port = free_port()
    settings = make_settings(sandbox, database_url, tmp_path, HTTP_PORT=port, PUBLIC_URL=f"http://127.0.0.1:{port}")
    async with running(settings, renderer) as app:
        url, headers = f"http://127.0.0.1:{port}/webhooks/telegram", {"X-Telegram-Bot-Api-Secret-Token": app.telegram_secret_token,
                                                                     "Content-Type": "application/json"}
        bodies = {"{": "malformed JSON", "[]": "expected a JSON object", '{"update_id": "x"}': "not a Telegram update",
                  '{"update_id": 1, "message": ' + "[" * 2000 + "]" * 2000 + "}": "nested",
                  '{"update_id": 1, "message": ' + "[" * 40 + "]" * 40 + "}": "nested"}
        async with httpx.AsyncClient() as client:
            for body, reason in bodies.items():
                answer = await client.post(url, content=body, headers=headers)
                assert answer.status_code == 400 and reason in answer.json()["error"], (body[:40], answer.text)
            sandbox.add_user(8008, "Anna", started=True)
            update = {"update_id": 10**6, "message": {
                "message_id": 1, "date": 1767225600, "chat": {"id": 8008, "type": "private", "first_name": "A\ud800nna"},
                "from": {"id": 8008, "is_bot": False, "first_name": "A\ud800nn\u0000a"}, "text": "/start",
                "entities": [{"type": "bot_command", "offset": 0, "length": 6}]}}
            answer = await client.post(url, content=json.dumps(update), headers=headers)
        assert answer.status_code == 200, answer.text
        intro = (await sandbox.wait_for_messages(8008, 2))[0]
        assert intro["text"].startswith("Anna, здравствуйте")
        await app.inbox.idle()
        async with app.db() as session:
            assert (await session.execute(select(Lead.first_name).where(Lead.tg_user_id == 8008))).scalar_one() == "Anna"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
