"""Queries of the ``tg_sends`` table (the send outbox, :mod:`bot.sender`)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import TgSend
from bot.db.sql import any_row, lease_rows, unlocked

PENDING = ("sending", "waiting")


async def stage(session: AsyncSession, rows: Sequence[dict[str, Any]], owner: str, lease_until: datetime) -> list[int]:
    """Record messages about to be sent by ``owner`` (state ``sending``); their ids, in order."""
    records = [TgSend(**row, state="sending", owner=owner, lease_until=lease_until) for row in rows]
    session.add_all(records)
    await session.flush()
    return [record.id for record in records]


async def get(session: AsyncSession, ids: Sequence[int]) -> list[TgSend]:
    found = {row.id: row for row in (await session.execute(select(TgSend).where(TgSend.id.in_(ids)))).scalars()}
    return [found[row_id] for row_id in ids if row_id in found]


async def settle(session: AsyncSession, changes: Sequence[dict[str, Any]]) -> None:
    """Apply ``{"id": …, column: value…}`` changes (sent, waiting, failed…), one statement for all, rows locked in
    ``id`` order (as every multi-row write of ``tg_sends`` does: no deadlock between two)."""
    if changes:
        await session.execute(update(TgSend), sorted(changes, key=lambda change: change["id"]))


def _claimable(now: datetime) -> Any:
    return (TgSend.state.in_(PENDING), or_(TgSend.lease_until.is_(None), TgSend.lease_until < now))


async def any_claimable(session: AsyncSession, now: datetime) -> bool:
    return await any_row(session, TgSend.id, *_claimable(now))


async def claim(session: AsyncSession, owner: str, now: datetime, lease_until: datetime, limit: int) -> Sequence[Row[Any]]:
    """Lease to ``owner`` up to ``limit`` pending sends nobody holds (oldest first; locked rows skipped on PostgreSQL)."""
    return await lease_rows(session, TgSend.id, _claimable(now), _claimable(now), limit, {"owner": owner, "lease_until": lease_until},
                            (TgSend.state, TgSend.kind, TgSend.chat_id))


async def renew(session: AsyncSession, ids: Iterable[int], owner: str, lease_until: datetime) -> None:
    """Extend ``owner``'s lease on the sends ``ids``; one whose state is being written (:func:`settle`) is skipped,
    not waited for (the next round renews it if it is still pending): waiting while holding others could deadlock."""
    mine = select(TgSend.id).where(TgSend.id.in_(list(ids)), TgSend.owner == owner, TgSend.state.in_(PENDING)).order_by(TgSend.id)
    query = update(TgSend).where(TgSend.id.in_(unlocked(mine))).values(lease_until=lease_until).execution_options(synchronize_session=False)
    await session.execute(query)


async def prune(session: AsyncSession, before: datetime) -> None:
    """Forget sends settled (sent, failed, unknown) that were recorded before ``before``."""
    await session.execute(delete(TgSend).where(TgSend.state.not_in(PENDING), TgSend.created_at < before))


async def count(session: AsyncSession, state: str) -> int:
    """How many sends are in ``state`` (checks, tests)."""
    return len((await session.execute(select(TgSend.id).where(TgSend.state == state))).all())


