"""Every query of the broadcast tables. State changes are conditional updates, so two
instances (or a CLI and the service) never step on each other."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, case, delete, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import Lead
from bot.db.sql import any_row, insert_ignore
from broadcasts.models import (
    ACTIVE,
    CANCELLED,
    DONE,
    EXITED,
    FINISHED,
    HOLDOUT,
    ONEOFF,
    PENDING,
    RUNNING,
    SCHEDULED,
    SENDING,
    SENT,
    UNKNOWN,
    Broadcast,
    Click,
    Delivery,
    Enrollment,
)
from broadcasts.segments import COLUMNS, Recipient, reachable

D = Delivery.__table__.c
DUE_PAGE = 500


# ------------------------------------------------------------------ broadcasts
async def get(session: AsyncSession, broadcast_id: int) -> Broadcast | None:
    return await session.get(Broadcast, broadcast_id)


async def recent(session: AsyncSession, limit: int = 10) -> list[Broadcast]:
    query = select(Broadcast).order_by(Broadcast.id.desc()).limit(limit)
    return list((await session.execute(query)).scalars())


async def update_broadcast(session: AsyncSession, broadcast_id: int, **values: Any) -> None:
    await session.execute(update(Broadcast).where(Broadcast.id == broadcast_id).values(**values))


async def transition(session: AsyncSession, broadcast_id: int, sources: Iterable[str], target: str, **values: Any) -> bool:
    """Move a broadcast to ``target`` if it is in one of ``sources``."""
    query = update(Broadcast).where(Broadcast.id == broadcast_id, Broadcast.state.in_(tuple(sources))).values(state=target, **values)
    return (await session.execute(query)).rowcount == 1


def _due(now: datetime) -> tuple[Any, ...]:
    return Broadcast.state == SCHEDULED, Broadcast.send_at <= now


async def any_due(session: AsyncSession, now: datetime) -> bool:
    """Whether a scheduled broadcast's time has come (a read)."""
    return await any_row(session, Broadcast.id, *_due(now))


async def activate_due(session: AsyncSession, now: datetime) -> None:
    """Scheduled broadcasts whose time has come start running."""
    await session.execute(
        update(Broadcast).where(*_due(now)).values(state=RUNNING, started_at=now)
    )


async def runnable(session: AsyncSession, now: datetime) -> list[int]:
    """Running broadcasts with work to do now: recipients to select, deliveries due, or a one-off to finish."""
    due = exists().where(D.broadcast_id == Broadcast.id, D.state == PENDING, or_(D.due_at.is_(None), D.due_at <= now))
    left = exists().where(D.broadcast_id == Broadcast.id, D.state.in_((PENDING, SENDING)))
    work = or_(Broadcast.prepared.is_(False), due, and_(Broadcast.kind == ONEOFF, ~left))
    query = select(Broadcast.id).where(Broadcast.state == RUNNING, work).order_by(Broadcast.id)
    return list((await session.execute(query)).scalars())


async def claim(session: AsyncSession, broadcast_id: int, owner: str, now: datetime, ttl: timedelta) -> bool:
    """Take the sender's lease of a running broadcast (free, expired, or already ours)."""
    query = update(Broadcast).where(
        Broadcast.id == broadcast_id, Broadcast.state == RUNNING,
        or_(Broadcast.owner.is_(None), Broadcast.owner == owner, Broadcast.lease_until < now),
    ).values(owner=owner, lease_until=now + ttl)
    return (await session.execute(query)).rowcount == 1


async def claim_progress(session: AsyncSession, broadcast_id: int, owner: str, now: datetime, ttl: timedelta) -> bool:
    """Hold the broadcast's progress message for ``owner`` (free, run out, or already ours): one instance edits it."""
    query = update(Broadcast).where(
        Broadcast.id == broadcast_id,
        or_(Broadcast.progress_owner.is_(None), Broadcast.progress_owner == owner, Broadcast.progress_until < now),
    ).values(progress_owner=owner, progress_until=now + ttl)
    return (await session.execute(query)).rowcount == 1


async def renew(session: AsyncSession, broadcast_id: int, owner: str, now: datetime, ttl: timedelta) -> bool:
    """Extend our lease; False once the broadcast was paused or cancelled, or the lease was lost."""
    query = update(Broadcast).where(Broadcast.id == broadcast_id, Broadcast.owner == owner, Broadcast.state == RUNNING).values(lease_until=now + ttl)
    return (await session.execute(query)).rowcount == 1


async def release(session: AsyncSession, broadcast_id: int, owner: str) -> None:
    await session.execute(update(Broadcast).where(Broadcast.id == broadcast_id, Broadcast.owner == owner).values(owner=None, lease_until=None))


async def upsert_step(session: AsyncSession, sequence: str, step: str, **values: Any) -> int:
    """The broadcast row of a sequence step, created running (once, when instances start together) or updated to the
    current definition."""
    await session.execute(insert_ignore(session, Broadcast).values(sequence=sequence, step=step, kind="step", state=RUNNING,
                                                                    prepared=True, **values))
    found = (await session.execute(select(Broadcast).where(Broadcast.sequence == sequence, Broadcast.step == step))).scalar_one()
    for key, value in values.items():
        setattr(found, key, value)
    return found.id


async def step_ids(session: AsyncSession, sequence: str) -> dict[str, int]:
    query = select(Broadcast.step, Broadcast.id).where(Broadcast.sequence == sequence)
    return {step: broadcast_id for step, broadcast_id in await session.execute(query)}


# ------------------------------------------------------------------ deliveries
async def add_deliveries(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert delivery rows; a row that exists already is left as it is."""
    if rows:
        await session.execute(insert_ignore(session, Delivery), rows)


async def add_delivery(session: AsyncSession, **row: Any) -> bool:
    """Insert one delivery row; False if (broadcast, lead) had one."""
    return (await session.execute(insert_ignore(session, Delivery).values(**row))).rowcount == 1


async def discard_deliveries(session: AsyncSession, broadcast_id: int) -> None:
    await session.execute(delete(Delivery).where(Delivery.broadcast_id == broadcast_id))


async def recover(session: AsyncSession, broadcast_id: int) -> int:
    """Rows a dead sender left ``sending`` become ``unknown``: they may have arrived, so never resend."""
    query = update(Delivery).where(Delivery.broadcast_id == broadcast_id, Delivery.state == SENDING).values(
        state=UNKNOWN, error="the sender stopped during the Bot API call"
    )
    return (await session.execute(query)).rowcount


async def cancel_pending(session: AsyncSession, broadcast_id: int) -> int:
    query = update(Delivery).where(Delivery.broadcast_id == broadcast_id, Delivery.state == PENDING).values(state=CANCELLED)
    return (await session.execute(query)).rowcount


async def finish_if_done(session: AsyncSession, broadcast_id: int, now: datetime) -> bool:
    """A one-off broadcast with nothing pending or in flight is finished."""
    left = exists().where(D.broadcast_id == broadcast_id, D.state.in_((PENDING, SENDING)))
    query = update(Broadcast).where(Broadcast.id == broadcast_id, Broadcast.kind == ONEOFF, Broadcast.state == RUNNING, ~left)
    return (await session.execute(query.values(state=FINISHED, finished_at=now, owner=None, lease_until=None))).rowcount == 1


@dataclass(frozen=True, slots=True)
class Row:
    """A delivery due now, with what sending it needs."""

    id: int
    variant: str
    attempts: int
    recipient: Recipient
    reachable: bool


async def due(session: AsyncSession, broadcast_id: int, now: datetime, after: int, limit: int) -> list[Row]:
    """Pending deliveries due at ``now``, by id after ``after`` (the sender's keyset cursor)."""
    query = (
        select(Delivery.id, Delivery.variant, Delivery.attempts, case((reachable(), True), else_=False), *COLUMNS)
        .join(Lead, Lead.id == Delivery.lead_id)
        .where(Delivery.broadcast_id == broadcast_id, Delivery.state == PENDING, Delivery.id > after,
               or_(Delivery.due_at.is_(None), Delivery.due_at <= now))
        .order_by(Delivery.id)
        .limit(limit)
    )
    return [Row(row[0], row[1], row[2], Recipient(*row[4:]), bool(row[3])) for row in await session.execute(query)]


async def mark_sending(session: AsyncSession, ids: Sequence[int]) -> set[int]:
    """Write-ahead before the Bot API calls: ``pending`` → ``sending``; returns the ids claimed."""
    query = update(Delivery.__table__).where(D.id.in_(ids), D.state == PENDING).values(state=SENDING).returning(D.id)
    return set((await session.execute(query)).scalars())


_RESULT = (
    update(Delivery.__table__)
    .where(D.id == bindparam("b_id"), D.state == bindparam("b_from"))
    .values(state=bindparam("b_state"), error=bindparam("b_error"), tg_message_id=bindparam("b_message_id"),
            sent_at=bindparam("b_sent_at"), due_at=bindparam("b_due_at"), attempts=D.attempts + bindparam("b_tries"))
)


async def write_results(session: AsyncSession, results: list[dict[str, Any]], sent_to: list[int], now: datetime) -> None:
    """Apply outcomes (``b_*`` parameters of one conditional update each) and stamp the leads sent to."""
    if results:
        await session.execute(_RESULT, results)
    if sent_to:
        await session.execute(update(Lead.__table__).where(Lead.__table__.c.id.in_(sent_to)).values(last_broadcast_at=now))


# ---------------------------------------------------------------- stats & clicks
async def counts(session: AsyncSession, broadcast_id: int) -> dict[tuple[str, str], int]:
    """Deliveries by (variant, state)."""
    query = select(Delivery.variant, Delivery.state, func.count()).where(Delivery.broadcast_id == broadcast_id).group_by(Delivery.variant, Delivery.state)
    return {(variant, state): n for variant, state, n in await session.execute(query)}


async def click_counts(session: AsyncSession, broadcast_id: int) -> dict[tuple[str, str], int]:
    """Buyers who pressed each button, by (variant, button)."""
    query = (
        select(Delivery.variant, Click.button, func.count())
        .join(Delivery, Delivery.id == Click.delivery_id)
        .where(Delivery.broadcast_id == broadcast_id)
        .group_by(Delivery.variant, Click.button)
    )
    return {(variant, button): n for variant, button, n in await session.execute(query)}


async def outcome_counts(session: AsyncSession, broadcast_id: int) -> dict[str, tuple[int, int, int]]:
    """(replies, unsubscribes, conversions) by variant."""
    query = (
        select(Delivery.variant, func.count(Delivery.replied_at), func.count(Delivery.unsubscribed_at), func.count(Delivery.converted_at))
        .where(Delivery.broadcast_id == broadcast_id)
        .group_by(Delivery.variant)
    )
    return {variant: (replies, unsubscribes, conversions) for variant, replies, unsubscribes, conversions in await session.execute(query)}


async def delivery_of(session: AsyncSession, broadcast_id: int, tg_user_id: int) -> Delivery | None:
    """The delivery of a broadcast to this Telegram user (behind a pressed button)."""
    query = select(Delivery).join(Lead, Lead.id == Delivery.lead_id).where(Delivery.broadcast_id == broadcast_id, Lead.tg_user_id == tg_user_id)
    return (await session.execute(query)).scalar_one_or_none()


async def add_click(session: AsyncSession, delivery_id: int, button: str, now: datetime) -> bool:
    """Count a press once per (delivery, button)."""
    query = insert_ignore(session, Click).values(delivery_id=delivery_id, button=button, created_at=now)
    return (await session.execute(query)).rowcount == 1


async def attribute(session: AsyncSession, lead_id: int, column: str, now: datetime, window: timedelta) -> None:
    """Credit ``column`` (replied_at, unsubscribed_at, converted_at) to the lead's deliveries sent (or held out) within ``window``."""
    query = update(Delivery).where(
        Delivery.lead_id == lead_id, Delivery.state.in_((SENT, HOLDOUT)), Delivery.sent_at >= now - window, getattr(Delivery, column).is_(None)
    ).values({column: now})
    await session.execute(query)


# ----------------------------------------------------------------- enrollments
async def enroll(session: AsyncSession, sequence: str, lead_id: int, at: datetime) -> bool:
    """Put a lead into a sequence; False if it ever was (re-entry is ignored)."""
    query = insert_ignore(session, Enrollment).values(sequence=sequence, lead_id=lead_id, state=ACTIVE, entered_at=at)
    return (await session.execute(query)).rowcount == 1


async def exit_sequences(session: AsyncSession, lead_id: int, sequences: Sequence[str], reason: str, now: datetime) -> None:
    """End the lead's active enrollments in ``sequences`` and cancel their deliveries not yet sent."""
    if not sequences:
        return
    query = (
        update(Enrollment)
        .where(Enrollment.lead_id == lead_id, Enrollment.state == ACTIVE, Enrollment.sequence.in_(sequences))
        .values(state=EXITED, exit_reason=reason, exited_at=now)
        .returning(Enrollment.sequence)
    )
    exited = list((await session.execute(query)).scalars())
    if exited:
        steps = select(Broadcast.id).where(Broadcast.sequence.in_(exited)).scalar_subquery()
        await session.execute(
            update(Delivery).where(Delivery.lead_id == lead_id, Delivery.state == PENDING, Delivery.broadcast_id.in_(steps)).values(state=CANCELLED)
        )


@dataclass(frozen=True, slots=True)
class Due:
    """An enrollment whose step is due, with what deciding about it needs."""

    enrollment_id: int
    lead_id: int
    entered_at: datetime
    stage: str
    matches: bool  # the step's segment (and reachability) holds for the lead


async def due_enrollments(
    session: AsyncSession, sequence: str, step_id: int, entered_before: datetime, segment: ColumnElement[bool], limit: int = DUE_PAGE,
) -> list[Due]:
    """Active enrollments that entered before ``entered_before`` and have no delivery of step ``step_id`` yet."""
    done = exists().where(D.broadcast_id == step_id, D.lead_id == Enrollment.lead_id)
    query = (
        select(Enrollment.id, Enrollment.lead_id, Enrollment.entered_at, Lead.stage, case((segment, True), else_=False))
        .join(Lead, Lead.id == Enrollment.lead_id)
        .where(Enrollment.sequence == sequence, Enrollment.state == ACTIVE, Enrollment.entered_at <= entered_before, ~done)
        .order_by(Enrollment.id)
        .limit(limit)
    )
    return [Due(row[0], row[1], row[2], row[3], bool(row[4])) for row in await session.execute(query)]


async def complete(session: AsyncSession, enrollment_ids: Sequence[int]) -> None:
    if enrollment_ids:
        await session.execute(update(Enrollment).where(Enrollment.id.in_(enrollment_ids), Enrollment.state == ACTIVE).values(state=DONE))
