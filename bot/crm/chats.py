"""Every query of ``amojo_chats`` (buyers' amoCRM chats) and ``amojo_replies`` (managers' replies from amoCRM)."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import aliased
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.crm import store
from bot.crm.models import DONE, FAILED, PENDING, SENDING, AmojoChat, AmojoReply

UNFINISHED = (PENDING, SENDING)  # a reply in these states holds up the buyer's later ones


async def by_conversation(session: AsyncSession, conversation_id: str) -> AmojoChat | None:
    return await session.get(AmojoChat, conversation_id, populate_existing=True)


async def of_lead(session: AsyncSession, lead_id: int) -> AmojoChat | None:
    return (await session.scalars(select(AmojoChat).where(AmojoChat.lead_id == lead_id))).first()


async def save(session: AsyncSession, conversation_id: str, lead_id: int, **columns: Any) -> AmojoChat:
    """Create or update the chat row of ``conversation_id``."""
    row = await session.get(AmojoChat, conversation_id)
    if row is None:
        row = AmojoChat(conversation_id=conversation_id, lead_id=lead_id, **columns)
        session.add(row)
    else:
        row.lead_id = lead_id
        for name, value in columns.items():
            setattr(row, name, value)
    await session.flush()
    return row


async def keep_reply(db: async_sessionmaker[AsyncSession], message_id: str, conversation_id: str, payload: dict[str, Any],
                     now: datetime) -> AmojoReply | None:
    """Store a reply from the hook; None if it was stored before (amoCRM sent the hook again). Claimed by the caller
    (it delivers it at once; if it dies, the lease runs out and :func:`claim_replies` takes it), unless an earlier
    reply to the buyer is not finished: then due (``claimed_at`` None), for :func:`claim_replies` after that one."""
    try:
        async with db.begin(urgent=True) as session:  # on the way to the buyer: before the background writes
            await store.lock(session, store.REPLIES)  # not between another instance's look at the buyer's replies and its claim
            behind = await session.scalar(select(exists().where(AmojoReply.conversation_id == conversation_id,
                                                                AmojoReply.state.in_(UNFINISHED))))
            reply = AmojoReply(message_id=message_id, conversation_id=conversation_id, payload=payload,
                               **({"state": PENDING} if behind else {"state": SENDING, "claimed_at": now, "attempts": 1}))
            session.add(reply)
            await session.flush()
            session.expunge(reply)
    except IntegrityError:
        return None
    return reply


async def claim_replies(db: async_sessionmaker[AsyncSession], now: datetime, lease: float, limit: int = 50) -> list[AmojoReply]:
    """Mark due replies ``sending`` (or ones whose claimer died) and return them, oldest first: of each buyer's, only
    the first not finished (the next once it is), so a buyer's replies go in order whichever instance takes them."""
    earlier = aliased(AmojoReply)
    due = and_(or_(
        (AmojoReply.state == PENDING) & or_(AmojoReply.next_attempt_at.is_(None), AmojoReply.next_attempt_at <= now),
        (AmojoReply.state == SENDING) & (AmojoReply.claimed_at < now - timedelta(seconds=lease)),
    ), ~exists().where(earlier.conversation_id == AmojoReply.conversation_id, earlier.id < AmojoReply.id,
                       earlier.state.in_(UNFINISHED)))
    async with db() as session:  # a read first: the hook delivers at once, so most rounds find nothing
        if not await session.scalar(select(exists().where(due))):
            return []
    async with db.begin() as session:
        await store.lock(session, store.REPLIES)  # one claimer at a time across instances
        query = select(AmojoReply).where(due).order_by(AmojoReply.id).limit(limit)
        rows = list((await session.scalars(query)).all())
        for row in rows:
            row.state, row.claimed_at, row.attempts = SENDING, now, row.attempts + 1  # a new try: the old one's claim is over
        await session.flush()  # before the rows leave the session, or the claim is never written
        session.expunge_all()
        return rows


async def renew_replies(db: async_sessionmaker[AsyncSession], held: list[AmojoReply], now: datetime) -> None:
    """Renew the leases of replies whose delivery is under way (those still claimed by that try)."""
    async with db.begin() as session:
        await session.execute(update(AmojoReply).where(
            AmojoReply.state == SENDING, or_(*((AmojoReply.id == reply.id) & (AmojoReply.attempts == reply.attempts) for reply in held)),
        ).values(claimed_at=now))


async def send_of(session: AsyncSession, reply_id: int) -> int | None:
    """The send outbox record of the reply's text, if an earlier try recorded it."""
    return await session.scalar(select(AmojoReply.send_id).where(AmojoReply.id == reply_id))


async def keep_send(session: AsyncSession, reply_id: int, send_id: int) -> None:
    """Note the send outbox record of the reply's text (in the transaction that records it)."""
    await session.execute(update(AmojoReply).where(AmojoReply.id == reply_id).values(send_id=send_id))


async def finish_reply(session: AsyncSession, reply: AmojoReply, now: datetime, *, error: str | None = None,
                       retry_at: datetime | None = None) -> bool:
    """Done, failed for good (``error``), or back to pending until ``retry_at`` (in the caller's transaction).
    False, and nothing changed, if ``reply``'s claim is over (its lease ran out and another try took it)."""
    if retry_at is not None:
        values: dict[str, Any] = {"state": PENDING, "next_attempt_at": retry_at, "last_error": error}
    else:
        values = {"state": FAILED if error else DONE, "last_error": error, "done_at": now}
    query = (update(AmojoReply).where(AmojoReply.id == reply.id, AmojoReply.state == SENDING, AmojoReply.attempts == reply.attempts)
             .values(claimed_at=None, **values))
    return (await session.execute(query)).rowcount == 1
