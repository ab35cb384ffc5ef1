"""Queries of the operator-chat tables: ``relay_topics``, ``relay_links``, ``relay_waits``."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import Lead
from bot.db.sql import any_row, lease_rows
from bot.relay.models import RelayLink, RelayTopic, RelayWait


# ------------------------------------------------------------------ topics
async def topic(session: AsyncSession, lead_id: int) -> RelayTopic | None:
    return await session.get(RelayTopic, lead_id, populate_existing=True)


async def conversation(session: AsyncSession, chat_id: int, *, thread_id: int | None = None,
                       lead_id: int | None = None) -> tuple[RelayTopic, Lead] | None:
    """A topic with its lead, by the topic's thread or by the lead."""
    query = select(RelayTopic, Lead).join(Lead, Lead.id == RelayTopic.lead_id).where(RelayTopic.chat_id == chat_id)
    query = query.where(RelayTopic.thread_id == thread_id) if thread_id is not None else query.where(RelayTopic.lead_id == lead_id)
    row = (await session.execute(query)).one_or_none()
    return (row[0], row[1]) if row is not None else None


async def topic_by_card(session: AsyncSession, chat_id: int, message_id: int) -> RelayTopic | None:
    query = select(RelayTopic).where(RelayTopic.chat_id == chat_id, RelayTopic.card_message_id == message_id)
    return (await session.execute(query)).scalar_one_or_none()


async def place_topic(session: AsyncSession, lead_id: int, chat_id: int, thread_id: int | None, card_message_id: int,
                      *, name: str, card_hash: str, replaces: int | None) -> bool:
    """Record a created topic and card, unless another instance placed one first.

    ``replaces`` is the card the caller saw (None: there was none); the row is only written if
    it still holds that card, so a topic is created (or recreated) by one instance only.
    """
    current = await session.get(RelayTopic, lead_id, with_for_update=True, populate_existing=True)
    if current is None:
        try:
            async with session.begin_nested():
                session.add(RelayTopic(lead_id=lead_id, chat_id=chat_id, thread_id=thread_id, card_message_id=card_message_id,
                                       name=name, card_hash=card_hash))
        except IntegrityError:
            return False
        return True
    if current.card_message_id != replaces:
        return False
    current.chat_id, current.thread_id, current.card_message_id = chat_id, thread_id, card_message_id
    current.name, current.card_hash, current.is_closed, current.stale = name, card_hash, False, False
    return True


async def plan_topic(session: AsyncSession, lead_id: int, chat_id: int) -> None:
    """A topic to create in the background (``TOPIC_ON_ARRIVAL``), unless the lead has one."""
    if await session.get(RelayTopic, lead_id) is None:
        session.add(RelayTopic(lead_id=lead_id, chat_id=chat_id))


async def mark_stale(session: AsyncSession, lead_id: int) -> None:
    await session.execute(update(RelayTopic).where(RelayTopic.lead_id == lead_id).values(stale=True))


def _to_refresh(chat_ids: Sequence[int], now: datetime) -> tuple[Any, ...]:
    """Topics (in the groups ``chat_ids``) to create (planned) or whose card may be out of date, no round holds."""
    return (RelayTopic.chat_id.in_(list(chat_ids)), or_(RelayTopic.stale, RelayTopic.card_message_id.is_(None)),
            or_(RelayTopic.lease_until.is_(None), RelayTopic.lease_until < now))


async def any_to_refresh(session: AsyncSession, chat_ids: Sequence[int], now: datetime) -> bool:
    return await any_row(session, RelayTopic.lead_id, *_to_refresh(chat_ids, now))


async def claim_to_refresh(session: AsyncSession, chat_ids: Sequence[int], now: datetime, lease_until: datetime,
                           limit: int = 20) -> list[int]:
    """Lease up to ``limit`` topics to create or refresh (no longer stale: an event meanwhile marks one again); their
    leads' ids. A topic another instance's round holds is left to it."""
    due = _to_refresh(chat_ids, now)
    rows = await lease_rows(session, RelayTopic.lead_id, due, due, limit, {"stale": False, "lease_until": lease_until}, ())
    return [row[0] for row in rows]


async def release_refreshed(session: AsyncSession, lead_ids: Sequence[int], lease_until: datetime) -> None:
    """Give back the leases of :func:`claim_to_refresh` (one taken over since is left alone)."""
    await session.execute(update(RelayTopic).where(RelayTopic.lead_id.in_(list(lead_ids)), RelayTopic.lease_until == lease_until)
                          .values(lease_until=None).execution_options(synchronize_session=False))


# ------------------------------------------------------------------- links
async def add_links(session: AsyncSession, lead_id: int, direction: str, buyer_chat_id: int,
                    pairs: Sequence[tuple[int, int]], operator_chat_id: int) -> None:
    """Remember ``(buyer message id, operator message id)`` pairs."""
    session.add_all(
        RelayLink(lead_id=lead_id, direction=direction, buyer_chat_id=buyer_chat_id, buyer_message_id=buyer_id,
                  operator_chat_id=operator_chat_id, operator_message_id=operator_id)
        for buyer_id, operator_id in pairs
    )


async def relayed_in_since(session: AsyncSession, lead_id: int, since: datetime) -> bool:
    """Whether a buyer message of the lead reached the operator chat since ``since``."""
    query = select(RelayLink.id).where(RelayLink.lead_id == lead_id, RelayLink.direction == "in", RelayLink.created_at >= since).limit(1)
    return (await session.execute(query)).first() is not None


async def operator_side(session: AsyncSession, buyer_chat_id: int, buyer_message_id: int) -> RelayLink | None:
    """The first operator-chat counterpart of a buyer-chat message."""
    query = (select(RelayLink).where(RelayLink.buyer_chat_id == buyer_chat_id, RelayLink.buyer_message_id == buyer_message_id)
             .order_by(RelayLink.id).limit(1))
    return (await session.execute(query)).scalar_one_or_none()


async def buyer_side(session: AsyncSession, operator_chat_id: int, operator_message_id: int) -> RelayLink | None:
    """The buyer-chat counterpart of an operator-chat message."""
    query = (select(RelayLink).where(RelayLink.operator_chat_id == operator_chat_id,
                                     RelayLink.operator_message_id == operator_message_id)
             .order_by(RelayLink.id).limit(1))
    return (await session.execute(query)).scalar_one_or_none()


# ------------------------------------------------------------------- waits
async def open_wait(session: AsyncSession, lead_id: int) -> RelayWait | None:
    query = select(RelayWait).where(RelayWait.lead_id == lead_id, RelayWait.closed_at.is_(None))
    return (await session.execute(query)).scalar_one_or_none()


async def due_waits(session: AsyncSession, now: datetime) -> Sequence[RelayWait]:
    """Open waits past a deadline whose ping was not sent yet."""
    query = select(RelayWait).where(
        RelayWait.closed_at.is_(None),
        or_(and_(RelayWait.level < 1, RelayWait.due_at <= now), and_(RelayWait.level < 2, RelayWait.escalate_at <= now)),
    ).order_by(RelayWait.started_at)
    return (await session.execute(query)).scalars().all()


async def claim_level(session: AsyncSession, wait_id: int, seen: int, level: int) -> bool:
    """Move an open wait from ping level ``seen`` to ``level``; False if someone else did."""
    result = await session.execute(
        update(RelayWait).where(RelayWait.id == wait_id, RelayWait.level == seen, RelayWait.closed_at.is_(None))
        .values(level=level)
    )
    return result.rowcount == 1


async def last_answer(session: AsyncSession, lead_id: int) -> RelayWait | None:
    """The latest answered wait of a lead (who talked to the buyer last)."""
    query = (select(RelayWait).where(RelayWait.lead_id == lead_id, RelayWait.answered_by.is_not(None))
             .order_by(RelayWait.closed_at.desc()).limit(1))
    return (await session.execute(query)).scalar_one_or_none()


async def answered_since(session: AsyncSession, since: datetime) -> Sequence[RelayWait]:
    """Waits answered (not dismissed) since ``since``."""
    query = select(RelayWait).where(RelayWait.closed_at >= since, RelayWait.dismissed.is_(False),
                                    RelayWait.response_seconds.is_not(None))
    return (await session.execute(query)).scalars().all()


async def open_waits(session: AsyncSession) -> Sequence[tuple[RelayWait, Lead, RelayTopic | None]]:
    """Every open wait with its lead and topic, longest first."""
    query = (select(RelayWait, Lead, RelayTopic).join(Lead, Lead.id == RelayWait.lead_id)
             .outerjoin(RelayTopic, RelayTopic.lead_id == RelayWait.lead_id)
             .where(RelayWait.closed_at.is_(None)).order_by(RelayWait.started_at))
    return [tuple(row) for row in (await session.execute(query)).all()]  # type: ignore[misc]
