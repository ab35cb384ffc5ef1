"""Queries of the ``leads`` table."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import Lead


async def by_tg_user(session: AsyncSession, tg_user_id: int, *, for_update: bool = False) -> Lead | None:
    query = select(Lead).where(Lead.tg_user_id == tg_user_id)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def of_user_or_id(session: AsyncSession, tg_user_id: int, lead_id: int | None, *,
                        for_update: bool = False) -> tuple[Lead | None, Lead | None]:
    """In one query: the lead of a Telegram user, and the lead ``lead_id`` (a website quiz's)."""
    condition = Lead.tg_user_id == tg_user_id if lead_id is None else or_(Lead.tg_user_id == tg_user_id, Lead.id == lead_id)
    query = select(Lead).where(condition)
    if for_update:
        query = query.with_for_update()
    found = (await session.execute(query)).scalars().all()
    return (next((lead for lead in found if lead.tg_user_id == tg_user_id), None),
            next((lead for lead in found if lead.id == lead_id), None))


async def by_crm_lead(session: AsyncSession, crm_lead_id: int) -> Lead | None:
    return (await session.execute(select(Lead).where(Lead.crm_lead_id == crm_lead_id))).scalars().first()


async def latest_by_phone(session: AsyncSession, phone: str) -> Lead | None:
    """The newest lead holding ``phone`` from a website quiz or a shared contact (a typed phone proves nothing)."""
    query = select(Lead).where(Lead.phone == phone, Lead.phone_typed.is_(False)).order_by(Lead.id.desc()).limit(1)
    return (await session.execute(query)).scalar_one_or_none()


async def lock_phone(session: AsyncSession, phone: str) -> None:
    """Hold, until the transaction ends, the right to file leads under ``phone``: transactions that look a
    phone up and then create or change a lead take turns per phone. On PostgreSQL a transaction-level
    advisory lock keyed by the phone; SQLite write transactions already run one at a time."""
    if session.bind.dialect.name == "postgresql":
        digest = hashlib.blake2b(f"phone:{phone}".encode(), digest_size=8).digest()
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": int.from_bytes(digest, "big", signed=True)})


async def mark_without_task(session: AsyncSession, lead_ids: Sequence[int], now: datetime) -> None:
    """Record which leads amoCRM showed without an open task (``no_task_since``); the others have one."""
    await session.execute(update(Lead).where(Lead.no_task_since.is_not(None), Lead.id.not_in(lead_ids)).values(no_task_since=None))
    if lead_ids:
        await session.execute(update(Lead).where(Lead.id.in_(lead_ids), Lead.no_task_since.is_(None)).values(no_task_since=now))
