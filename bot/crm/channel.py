"""The amoCRM chat channel of this installation: connecting it to the account and remembering its ``scope_id``.

``optobot amocrm connect-channel`` reads the account's ``amojo_id`` (``GET /api/v4/account?with=amojo_id``),
connects the channel (``POST /v2/origin/custom/{channel_id}/connect``) and stores the ``scope_id`` amoCRM
answers in ``kv`` (``crm.channel``); ``disconnect-channel`` undoes both.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.crm import store
from bot.crm.amojo import AmojoClient
from bot.crm.client import AmoClient, AmoError
from bot.crm.config import ClientTuning
from bot.db.base import utcnow
from bot.ratelimit import RateLimit, rate_limit

CHANNEL_RPS = 25  # the Chats API publishes no limit (amoCRM's REST one is 7/s); 100 busy conversations need about 20/s


def channel_limiter(settings: Settings) -> RateLimit:
    """The Chats API's rate limit (shared by every instance with ``REDIS_URL``)."""
    return rate_limit(CHANNEL_RPS, redis_url=settings.redis_url, key=f"optobot:amojo:rate:{urlsplit(settings.amojo_base_url).netloc}")


def channel_client(settings: Settings, http: httpx.AsyncClient, limiter: RateLimit, tuning: ClientTuning) -> AmojoClient:
    settings.require("AMOCRM_CHANNEL_ID", "AMOCRM_CHANNEL_SECRET")
    return AmojoClient(settings.amojo_base_url, settings.amocrm_channel_id, settings.amocrm_channel_secret.get_secret_value(),  # type: ignore[arg-type, union-attr]
                       limiter, tuning, http=http)


async def connected(session: AsyncSession) -> dict[str, Any] | None:
    """The stored connection (``scope_id``, ``amojo_id``, ``channel_id``), or None."""
    value = await store.read(session, store.CHANNEL)
    return value if value and value.get("scope_id") else None


async def connect(db: async_sessionmaker[AsyncSession], rest: AmoClient, chats: AmojoClient, title: str) -> dict[str, Any]:
    """Connect the channel to the account and store the ``scope_id``; the same call again changes nothing."""
    account = await rest.get("/api/v4/account", {"with": "amojo_id"}) or {}
    amojo_id = account.get("amojo_id")
    if not amojo_id:
        raise AmoError("amoCRM did not return the account's amojo_id (GET /api/v4/account?with=amojo_id)")
    answer = await chats.connect(amojo_id, title)
    value = {"scope_id": answer["scope_id"], "amojo_id": amojo_id, "channel_id": chats.channel_id,
             "title": title, "connected_at": utcnow().isoformat(timespec="seconds")}
    async with db.begin() as session:
        await store.write(session, store.CHANNEL, value)
    return value


async def disconnect(db: async_sessionmaker[AsyncSession], chats: AmojoClient) -> dict[str, Any] | None:
    """Disconnect the stored connection (amoCRM stops sending hooks); None if there was none."""
    async with db() as session:
        value = await connected(session)
    if value is None:
        return None
    await chats.disconnect(value["amojo_id"])
    async with db.begin() as session:
        await store.write(session, store.CHANNEL, {})
    return value
