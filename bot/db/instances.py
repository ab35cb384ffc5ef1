"""Queries of the ``instances`` table: every running ``optobot run`` and its last heartbeat."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import Instance

_JOIN_LOCK = 0x0B07_0900  # the advisory lock that orders instances joining at once (PostgreSQL)


async def lock_joining(session: AsyncSession) -> None:
    """Until the end of the transaction, one instance at a time joins (PostgreSQL; SQLite has one writer anyway)."""
    if session.bind.dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _JOIN_LOCK})


async def seen_since(session: AsyncSession, since: datetime) -> list[Instance]:
    return list((await session.scalars(select(Instance).where(Instance.seen_at >= since).order_by(Instance.started_at))).all())


async def forget_before(session: AsyncSession, before: datetime) -> None:
    """Drop the rows of instances silent since ``before`` (they died without leaving)."""
    await session.execute(delete(Instance).where(Instance.seen_at < before))


async def beat(session: AsyncSession, instance_id: str, now: datetime) -> bool:
    """Our heartbeat; False when our row is gone."""
    return (await session.execute(update(Instance).where(Instance.id == instance_id).values(seen_at=now))).rowcount == 1


async def remove(session: AsyncSession, instance_id: str) -> None:
    await session.execute(delete(Instance).where(Instance.id == instance_id))
