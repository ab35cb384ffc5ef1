"""``PUBLIC_URL`` set: Telegram delivers updates by webhook, guarded by a secret token."""
from __future__ import annotations

import socket
from pathlib import Path

import httpx

from bot.catalog.render import CatalogRenderer
from bot.sandbox.telegram import TelegramSandbox
from tests.buyer import Buyer
from tests.conftest import make_settings, running


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
