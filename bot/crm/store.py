"""The sync's durable facts in the ``kv`` table: token pair, sync state, reconcile cursor, claim lock, chat channel."""
from __future__ import annotations

from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.base import utcnow
from bot.db.models import KeyValue

TOKENS = "crm.tokens"
STATE = "crm.state"
RECONCILE = "crm.reconcile"
RECONCILE_TASKS = "crm.reconcile_tasks"  # REMINDER_TASK_TYPE tasks
CLAIM = "crm.claim"
CHAT_CLAIM = "crm.claim.chat"  # the amoCRM chat's round
REPLIES = "crm.replies"  # the claim lock of managers' replies from amoCRM
STAGES = "crm.stages"  # the lock under which amoCRM's lead changes are applied (webhooks and reconciles of all instances)
NO_TASK_CHECK = "crm.check.no_task"  # the lock of the «no deal without a task» check's queueing
CHANNEL = "crm.channel"  # the connected Chats API channel: scope_id, amojo_id, channel_id


async def read(session: AsyncSession, key: str) -> dict[str, Any] | None:
    row = await session.get(KeyValue, key, populate_existing=True)
    return dict(row.value) if row is not None else None


async def write(session: AsyncSession, key: str, value: dict[str, Any]) -> None:
    row = await session.get(KeyValue, key)
    if row is None:
        session.add(KeyValue(key=key, value=value))
    else:
        row.value = value
    await session.flush()


async def lock(session: AsyncSession, key: str) -> None:
    """Take the write lock of ``key``'s row (created if missing) until the transaction ends.

    The first statement of the transaction is a write, so SQLite takes its single writer
    lock at once and PostgreSQL locks the row: whoever holds it reads the latest committed data.
    """
    for _ in range(2):
        touched = await session.execute(update(KeyValue).where(KeyValue.key == key).values(updated_at=utcnow()))
        if touched.rowcount:
            return
        try:
            async with session.begin_nested():
                await session.execute(insert(KeyValue).values(key=key, value={}, updated_at=utcnow()))
            return
        except IntegrityError:  # another instance created it first: lock it
            continue
    raise RuntimeError(f"cannot lock kv row {key!r}")
