"""Helpers of the amoCRM chat tests: the whole service with the chat channel on, against both sandboxes."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import select

from bot.app import App
from bot.config import Settings
from bot.crm import channel
from bot.crm.hook import HOOK_PATH, hook_handler
from bot.db.models import Lead
from bot.sandbox.amocrm import AmoSandbox
from bot.sandbox.amocrm.chats import Channel
from bot.sandbox.balancer import free_port
from bot.sandbox.telegram import TelegramSandbox
from tests.relay_support import relay_settings


def channel_settings(sandbox: TelegramSandbox, amocrm: AmoSandbox, database_url: str, tmp_path: Path,
                     **overrides: Any) -> tuple[Settings, Channel]:
    """The operator chat, amoCRM and a chat channel registered for this service (its hook URL is set once it listens)."""
    registered = amocrm.chats.register_channel("http://127.0.0.1:9/webhooks/amojo/:scope_id")
    settings = relay_settings(sandbox, database_url, tmp_path, AMOCRM_BASE_URL=amocrm.base_url, AMOCRM_ACCESS_TOKEN=amocrm.long_lived_token,
                              AMOCRM_RPS=50, AMOCRM_CHANNEL_ID=registered.id, AMOCRM_CHANNEL_SECRET=registered.secret,
                              AMOJO_BASE_URL=amocrm.base_url,
                              **{"QUIET_HOURS": "", **overrides})  # a broadcast goes out whatever the hour the test runs at
    return settings, registered


async def connect(app: App, registered: Channel) -> str:
    """Point the channel's hooks at the running service and connect it (as `optobot amocrm connect-channel` does)."""
    registered.hook_url = f"http://127.0.0.1:{app.http_port}/webhooks/amojo/:scope_id"
    value = await channel.connect(app.db, app.crm.client, app.crm.chats_api, "Telegram")
    app.crm.wake()
    return str(value["scope_id"])


def registered_channel(amocrm: AmoSandbox) -> Channel:
    [registered] = amocrm.chats.channels.values()
    return registered


@asynccontextmanager
async def stored_only(app: App, registered: Channel) -> AsyncIterator[None]:
    """Meanwhile amoCRM's hooks reach an instance that stores a reply (claimed by it) and dies before delivering it."""
    dead = web.Application()
    dead.router.add_post(HOOK_PATH, hook_handler(app.db, registered.secret, app.crm.conversations.scope, lambda reply: None))
    runner = web.AppRunner(dead)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    live, registered.hook_url = registered.hook_url, f"http://127.0.0.1:{port}/webhooks/amojo/:scope_id"
    try:
        yield
    finally:
        registered.hook_url = live
        await runner.cleanup()


async def lead_of(app: App, tg_user_id: int) -> Lead:
    async with app.db() as session:
        return (await session.scalars(select(Lead).where(Lead.tg_user_id == tg_user_id))).one()
