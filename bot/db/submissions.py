"""Queries of the ``quiz_submissions`` table."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.base import utcnow
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


async def claim(session: AsyncSession, claims: dict[str, int], since: datetime) -> dict[str, int]:
    """Atomically give each start token (``token → Telegram user``) to its user unless another user
    has it or it expired, in one statement; returns ``token → lead id`` of the tokens given."""
    user = case(claims, value=QuizSubmission.token)
    query = (
        update(QuizSubmission)
        .where(
            QuizSubmission.token.in_(list(claims)),
            QuizSubmission.created_at >= since,
            or_(QuizSubmission.claimed_by_tg_user_id.is_(None), QuizSubmission.claimed_by_tg_user_id == user),
        )
        .values(claimed_by_tg_user_id=user, claimed_at=func.coalesce(QuizSubmission.claimed_at, utcnow()))
        .returning(QuizSubmission.token, QuizSubmission.lead_id)
        .execution_options(synchronize_session=False)
    )
    return {token: lead_id for token, lead_id in (await session.execute(query)).all()}
