"""Queries of the ``tg_updates`` table (the durable inbox), and the update being handled in this task.

:data:`HANDLING` names the update whose handler is running; :func:`settle` marks it handled inside the
handler's own transaction (the journal calls it), so an update whose effects committed is never handled again.
Once a transaction holding the mark has committed, the handler's later transactions skip it.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, and_, delete, event, exists, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction, aliased

from bot.db.base import utcnow
from bot.db.models import TgUpdate
from bot.db.sql import any_row, insert_ignore, lease_rows, unlocked

_CLAIM_LOCK = 0x0B07_0920  # the advisory lock that orders claims of the inbox (PostgreSQL)


@dataclass
class Handling:
    """The update a handler is working on; ``settled`` is the transaction (session) its handled mark is in,
    ``durable`` whether that transaction committed."""

    update_id: int
    settled: AsyncSession | None = None
    durable: bool = False


HANDLING: ContextVar[Handling | None] = ContextVar("handling_update", default=None)
_MARKS = "inbox.marks"  # Session.info: the handled marks of its transaction, with the savepoint each was made in


async def settle(session: AsyncSession) -> None:
    """Mark the update being handled (if any) as handled in ``session``'s transaction: once per transaction, and
    not at all once a transaction that marked it committed (a mark rolled back is made again). The marks of a
    transaction (a group commit holds several) are written together, in one statement just before it commits."""
    handling = HANDLING.get()
    if handling is None or handling.durable or handling.settled is session:
        return
    handling.settled = session
    session.info.setdefault(_MARKS, []).append((handling, session.sync_session.get_nested_transaction()))


@event.listens_for(Session, "before_commit")
def _write_marks(session: Session) -> None:
    marks = session.info.get(_MARKS)
    if marks and not session.in_nested_transaction():  # a savepoint released is not yet a commit
        session.execute(_handled(sorted(handling.update_id for handling, _ in marks)))


@event.listens_for(Session, "after_commit")
def _marks_committed(session: Session) -> None:
    if not session.in_nested_transaction():
        for handling, _ in session.info.pop(_MARKS, ()):
            handling.durable = True


@event.listens_for(Session, "after_soft_rollback")
def _marks_rolled_back(session: Session, rolled_back: SessionTransaction) -> None:
    marks = session.info.get(_MARKS)
    if not marks:
        return
    kept = [] if not rolled_back.nested else [mark for mark in marks if not _within(mark[1], rolled_back)]
    for handling, _ in marks:
        if all(handling is not other for other, _ in kept):
            handling.settled = None
    session.info[_MARKS] = kept


def _within(savepoint: SessionTransaction | None, outer: SessionTransaction) -> bool:
    """Whether ``savepoint`` (None: the transaction itself) is ``outer`` or nested in it."""
    while savepoint is not None:
        if savepoint is outer:
            return True
        savepoint = savepoint.parent
    return False


async def store(session: AsyncSession, rows: Sequence[dict[str, Any]], owner: str, lease_until: datetime) -> set[int]:
    """Insert ``rows`` (``update_id``, ``chat_id``, ``raw``) leased to ``owner``; an update already stored is left
    as it is. Returns the new ids that are ``owner``'s to handle now: a new update whose chat has an earlier one
    not ``owner``'s (held by another instance, or waiting) waits unleased behind it, and :func:`claim` takes it
    once the earlier one is handled — one chat's updates run in order across instances."""
    if not rows:
        return set()
    now = utcnow()
    values = [{**row, "received_at": now, "attempts": 1, "owner": owner, "lease_until": lease_until} for row in rows]
    query = insert_ignore(session, TgUpdate).values(values).returning(TgUpdate.update_id)
    new = set((await session.execute(query)).scalars().all())
    if not new:
        return new
    earlier = aliased(TgUpdate)
    behind = exists().where(earlier.chat_id == TgUpdate.chat_id, earlier.update_id < TgUpdate.update_id, earlier.handled_at.is_(None),
                            or_(earlier.owner != owner, and_(earlier.owner.is_(None), earlier.lease_until.is_(None))))
    waiting = (update(TgUpdate).where(TgUpdate.update_id.in_(new), behind).values(owner=None, lease_until=None, attempts=0)
               .returning(TgUpdate.update_id).execution_options(synchronize_session=False))
    return new - set((await session.execute(waiting)).scalars().all())


def _claimable(now: datetime, owner: str) -> Any:
    """Unhandled, nobody's lease live, and no earlier update of its chat under another instance's live lease."""
    earlier = aliased(TgUpdate)
    held_before = exists().where(earlier.chat_id == TgUpdate.chat_id, earlier.update_id < TgUpdate.update_id, earlier.handled_at.is_(None),
                                 earlier.owner != owner, earlier.lease_until >= now)
    return (TgUpdate.handled_at.is_(None), or_(TgUpdate.lease_until.is_(None), TgUpdate.lease_until < now), ~held_before)


async def any_claimable(session: AsyncSession, owner: str, now: datetime) -> bool:
    """Whether some update waits for ``owner`` to take it (a read)."""
    return await any_row(session, TgUpdate.update_id, *_claimable(now, owner))


async def claim(session: AsyncSession, owner: str, now: datetime, lease_until: datetime, limit: int) -> Sequence[Row[Any]]:
    """Lease to ``owner`` up to ``limit`` unhandled updates nobody holds (oldest first); returns their ``update_id,
    chat_id, raw``. On PostgreSQL claims run one at a time (a transaction lock), so two instances never split a chat;
    an update a handler's transaction is marking handled is skipped, not waited for (it is handled)."""
    if session.bind.dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CLAIM_LOCK})
    return await lease_rows(session, TgUpdate.update_id, _claimable(now, owner),
                            (TgUpdate.handled_at.is_(None), or_(TgUpdate.lease_until.is_(None), TgUpdate.lease_until < now)),
                            limit, {"owner": owner, "lease_until": lease_until, "attempts": TgUpdate.attempts + 1},
                            (TgUpdate.chat_id, TgUpdate.raw))


async def renew(session: AsyncSession, ids: Iterable[int], owner: str, lease_until: datetime) -> None:
    """Extend ``owner``'s lease on the updates ``ids`` it is still handling. One a handler's transaction is marking
    handled (:func:`settle`; a group commit marks several, in whatever order its parts came) is skipped, not waited
    for: the next round renews it if it is still unhandled."""
    mine = select(TgUpdate.update_id).where(TgUpdate.update_id.in_(list(ids)), TgUpdate.owner == owner, TgUpdate.handled_at.is_(None))
    query = (update(TgUpdate).where(TgUpdate.update_id.in_(unlocked(mine.order_by(TgUpdate.update_id))))
             .values(lease_until=lease_until).execution_options(synchronize_session=False))
    await session.execute(query)


def _handled(ids: Iterable[int]) -> Any:
    return (update(TgUpdate).where(TgUpdate.update_id.in_(list(ids)), TgUpdate.handled_at.is_(None))
            .values(handled_at=utcnow()).execution_options(synchronize_session=False))


async def mark_handled(session: AsyncSession, ids: Iterable[int]) -> None:
    await session.execute(_handled(ids))


async def fail(session: AsyncSession, update_id: int, error: str, *, max_attempts: int, backoff: float) -> None:
    """Record a handler failure: the update is taken again ``backoff`` × 2^attempts seconds later, or, after
    ``max_attempts`` attempts, given up (marked handled, the error kept)."""
    row = await session.get(TgUpdate, update_id)
    if row is None:
        return
    row.error = error[:2000]
    if row.handled_at is None and row.attempts >= max_attempts:
        row.handled_at = utcnow()
    elif row.handled_at is None:  # nobody's until then: it holds up no later update of its chat
        row.owner, row.lease_until = None, utcnow() + timedelta(seconds=backoff * 2 ** row.attempts)


async def prune(session: AsyncSession, before: datetime) -> None:
    """Forget updates handled before ``before``."""
    await session.execute(delete(TgUpdate).where(TgUpdate.handled_at < before))


async def oldest_unhandled(session: AsyncSession) -> datetime | None:
    """When the oldest update still to be handled arrived (the inbox's lag); ``None``: none waits."""
    query = select(func.min(TgUpdate.received_at)).where(TgUpdate.handled_at.is_(None))
    return (await session.execute(query)).scalar_one()


async def unhandled(session: AsyncSession) -> int:
    """How many updates wait to be handled (checks, tests)."""
    query = select(func.count()).select_from(TgUpdate).where(TgUpdate.handled_at.is_(None))
    return (await session.execute(query)).scalar_one()
