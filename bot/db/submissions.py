"""Queries of the ``quiz_submissions`` table."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import QuizSubmission


async def by_key(session: AsyncSession, idempotency_key: str) -> QuizSubmission | None:
    query = select(QuizSubmission).where(QuizSubmission.idempotency_key == idempotency_key)
    return (await session.execute(query)).scalar_one_or_none()


async def by_token(session: AsyncSession, token: str) -> QuizSubmission | None:
    query = select(QuizSubmission).where(QuizSubmission.token == token).with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def unclaimed_by_phone(session: AsyncSession, phone: str, since: datetime) -> QuizSubmission | None:
    """The newest website quiz with this phone that no Telegram user has claimed yet."""
    query = (
        select(QuizSubmission)
        .where(
            QuizSubmission.phone == phone,
            QuizSubmission.source == "marquiz",
            QuizSubmission.claimed_by_tg_user_id.is_(None),
            QuizSubmission.created_at >= since,
        )
        .order_by(QuizSubmission.id.desc())
        .limit(1)
        .with_for_update()
    )
    return (await session.execute(query)).scalar_one_or_none()
