"""Queries of the ``telegram_webhook`` table: the Telegram webhook's secret token."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.base import utcnow
from bot.db.models import TelegramWebhook
from bot.db.sql import insert_ignore


async def secret_token(session: AsyncSession, candidate: str) -> str:
    """The webhook's secret token: ``candidate`` if none was stored yet (the first instance that asks), else the stored one."""
    await session.execute(insert_ignore(session, TelegramWebhook).values(id=1, secret_token=candidate, created_at=utcnow()))
    return (await session.execute(select(TelegramWebhook.secret_token).where(TelegramWebhook.id == 1))).scalar_one()
