"""Queries of the ``telegram_webhook`` table: the Telegram webhook's secret token."""
from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.base import utcnow
from bot.db.models import TelegramWebhook
from bot.db.sql import insert_ignore


async def secret_token(session: AsyncSession) -> str:
    """The webhook's secret token: random (256 bits, A-Za-z0-9_-), made by the first instance that asks, then the same for all."""
    await session.execute(insert_ignore(session, TelegramWebhook).values(id=1, secret_token=secrets.token_urlsafe(32), created_at=utcnow()))
    return (await session.execute(select(TelegramWebhook.secret_token).where(TelegramWebhook.id == 1))).scalar_one()
