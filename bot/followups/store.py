"""Every query of ``followups``: schedule once by key, claim what is due (each row by one instance), finish."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db import leads
from bot.db.models import Lead, Message
from bot.db.sql import any_row, insert_ignore
from bot.followups.models import ASK, CANCELLED, PENDING, SENDING, SURVEY, FollowUp


async def schedule(session: AsyncSession, *, lead_id: int, kind: str, key: str, due_at: datetime, now: datetime,
                   stage: str | None = None, data: dict[str, Any] | None = None) -> bool:
    """Add a follow-up unless one with ``key`` exists; True if added."""
    values = {"lead_id": lead_id, "kind": kind, "key": key, "stage": stage, "data": data or {}, "state": PENDING,
              "due_at": due_at, "attempts": 0, "created_at": now}
    result = await session.execute(insert_ignore(session, FollowUp).values(**values))
    return bool(result.rowcount)


def _due(now: datetime) -> Any:
    return or_(and_(FollowUp.state == PENDING, FollowUp.due_at <= now),
               and_(FollowUp.state == SENDING, FollowUp.lease_until < now))


async def any_due(session: AsyncSession, now: datetime) -> bool:
    """Whether a follow-up is due (a read)."""
    return await any_row(session, FollowUp.id, _due(now))


async def claim_due(session: AsyncSession, now: datetime, lease: timedelta, limit: int) -> list[FollowUp]:
    """Claim up to ``limit`` due rows (pending, or sending with a lapsed lease), each with an UPDATE that holds only
    while the row is still due: a row another instance claimed first is left to it."""
    candidates = (await session.execute(
        select(FollowUp.id).where(_due(now)).order_by(FollowUp.due_at, FollowUp.id).limit(limit)
    )).all()
    claimed = []
    for row in candidates:
        result = await session.execute(
            update(FollowUp).where(FollowUp.id == row.id, _due(now))
            .values(state=SENDING, lease_until=now + lease, attempts=FollowUp.attempts + 1)
        )
        if result.rowcount:
            claimed.append(row.id)
    if not claimed:
        return []
    return list((await session.scalars(select(FollowUp).where(FollowUp.id.in_(claimed)).order_by(FollowUp.due_at, FollowUp.id))).all())


def _held(row: FollowUp) -> Any:
    """The row as this claim left it: another instance that took it over after the lease ran out holds a new lease."""
    return and_(FollowUp.id == row.id, FollowUp.state == SENDING, FollowUp.lease_until == row.lease_until)


async def finish(session: AsyncSession, row: FollowUp, state: str, *, reason: str | None = None, sent_at: datetime | None = None) -> bool:
    """Close a claimed row; False if the claim was lost (the row is another instance's now)."""
    result = await session.execute(update(FollowUp).where(_held(row)).values(state=state, reason=reason, sent_at=sent_at, lease_until=None))
    return bool(result.rowcount)


async def postpone(session: AsyncSession, row: FollowUp, due_at: datetime, *, reason: str | None = None) -> bool:
    """A claimed row back to the queue until ``due_at`` (quiet hours, a transient error); False if the claim was lost."""
    result = await session.execute(update(FollowUp).where(_held(row)).values(state=PENDING, due_at=due_at, lease_until=None, reason=reason))
    return bool(result.rowcount)


async def was_sent(session: AsyncSession, lead_id: int, key: str) -> bool:
    """Whether the conversation log holds the message of follow-up ``key`` (sent before its instance died)."""
    metas = await session.scalars(select(Message.meta).where(Message.lead_id == lead_id, Message.direction == "out"))
    return any((meta or {}).get("followup") == key for meta in metas)


async def upcoming(session: AsyncSession, limit: int = 50) -> Sequence[tuple[FollowUp, Lead]]:
    """What is still to be sent, soonest first, with the buyers."""
    query = (select(FollowUp, Lead).join(Lead, Lead.id == FollowUp.lead_id)
             .where(FollowUp.state.in_((PENDING, SENDING))).order_by(FollowUp.due_at).limit(limit))
    return [(row[0], row[1]) for row in await session.execute(query)]


async def cancel(session: AsyncSession, followup_id: int, reason: str) -> bool:
    """Cancel a follow-up not sent yet; False if there is none (unknown, sent or being sent)."""
    result = await session.execute(update(FollowUp).where(FollowUp.id == followup_id, FollowUp.state == PENDING)
                                   .values(state=CANCELLED, reason=reason))
    return bool(result.rowcount)


async def cancel_key(session: AsyncSession, key: str, reason: str) -> None:
    """Cancel the follow-up ``key`` if it is not sent yet."""
    await session.execute(update(FollowUp).where(FollowUp.key == key, FollowUp.state == PENDING).values(state=CANCELLED, reason=reason))


async def reschedule(session: AsyncSession, key: str, due_at: datetime, data: dict[str, Any]) -> bool:
    """Move the follow-up ``key`` to ``due_at`` with ``data`` if it is not sent yet; True if it was pending."""
    result = await session.execute(update(FollowUp).where(FollowUp.key == key, FollowUp.state == PENDING)
                                   .values(due_at=due_at, data=data, reason=None))
    return bool(result.rowcount)


async def cancel_pending(session: AsyncSession, lead_id: int, kind: str, reason: str) -> None:
    """Cancel the lead's follow-ups of ``kind`` not sent yet."""
    await session.execute(update(FollowUp).where(FollowUp.lead_id == lead_id, FollowUp.kind == kind, FollowUp.state == PENDING)
                          .values(state=CANCELLED, reason=reason))


async def latest(session: AsyncSession, lead_id: int, kind: str) -> FollowUp | None:
    """The lead's last follow-up of ``kind`` (in any state)."""
    return await session.scalar(select(FollowUp).where(FollowUp.lead_id == lead_id, FollowUp.kind == kind).order_by(FollowUp.id.desc()).limit(1))


async def get(session: AsyncSession, followup_id: int) -> FollowUp | None:
    return await session.get(FollowUp, followup_id, populate_existing=True)


async def of_buyer(session: AsyncSession, tg_user_id: int, followup_id: int, kind: str) -> tuple[Lead, FollowUp] | None:
    """The buyer (locked first, as every writer here does) and their follow-up ``followup_id`` of ``kind``; None if not theirs."""
    lead = await leads.by_tg_user(session, tg_user_id, for_update=True)
    row = await get(session, followup_id)
    if lead is None or row is None or row.lead_id != lead.id or row.kind != kind:
        return None
    return lead, row


async def survey_asking(session: AsyncSession, lead_id: int, message_id: int) -> FollowUp | None:
    """The lead's survey whose «what would you change?» is message ``message_id`` and not answered yet."""
    rows = await session.scalars(select(FollowUp).where(FollowUp.lead_id == lead_id, FollowUp.kind == SURVEY))
    return next((row for row in rows if "comment_message_id" in row.data and row.data["comment_message_id"] in (message_id, None)
                 and "comment" not in row.data), None)  # None: the question is on its way


async def collected(session: AsyncSession, lead_id: int) -> dict[str, str]:
    """What the buyer has answered to the questions of every stage so far (the latest answer of each item)."""
    rows = await session.scalars(select(FollowUp).where(FollowUp.lead_id == lead_id, FollowUp.kind == ASK).order_by(FollowUp.id))
    answers: dict[str, str] = {}
    for row in rows:
        answers.update(row.data.get("answers") or {})
    return answers


async def asking(session: AsyncSession, lead_id: int, message_id: int) -> FollowUp | None:
    """The lead's questions row whose open question is message ``message_id`` (or one still being sent)."""
    rows = await session.scalars(select(FollowUp).where(FollowUp.lead_id == lead_id, FollowUp.kind == ASK))
    return next((row for row in rows if (row.data.get("asking") or {}).get("message_id") in (message_id, None)
                 and row.data.get("asking")), None)  # None: the question is on its way
