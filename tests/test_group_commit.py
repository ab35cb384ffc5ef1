"""Group commit (``db.together``): concurrent callers share transactions, a failing part fails alone, each part
runs in its caller's context, an update's handled mark commits with its part alone — on a real SQLite file and
PostgreSQL."""
from __future__ import annotations

import asyncio
import contextvars
from datetime import timedelta

import pytest
from sqlalchemy import event, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db import updates
from bot.db.base import utcnow
from bot.db.models import Instance, TgUpdate
from bot.db.session import open_database

CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="nobody")


async def _instance(session: AsyncSession, name: str) -> str:
    session.add(Instance(id=name, host="test", pid=1, role="all"))
    await session.flush()
    return CALLER.get()


async def test_a_burst_shares_commits_and_each_caller_gets_its_answer(database_url: str) -> None:
    db = open_database(database_url)
    commits = []
    event.listen(db.engine.sync_engine, "commit", lambda connection: commits.append(1))
    try:
        async def caller(name: str, urgent: bool) -> str:
            CALLER.set(name)
            return await db.together(lambda session: _instance(session, name), urgent=urgent)

        names = [f"caller-{index}" for index in range(40)]
        answers = await asyncio.gather(*(caller(name, index % 2 == 0) for index, name in enumerate(names)))

        assert answers == names  # each part ran in its caller's context and returned to it
        async with db() as session:
            assert await session.scalar(select(func.count()).select_from(Instance)) == 40
        assert len(commits) <= 10, f"{len(commits)} commits for 40 callers"
    finally:
        await db.close()


async def test_a_failing_part_is_rolled_back_alone(database_url: str) -> None:
    db = open_database(database_url)
    try:
        async def bad(session: AsyncSession) -> str:
            await _instance(session, "bad")
            raise ValueError("this caller's input is wrong")

        results = await asyncio.gather(
            db.together(lambda session: _instance(session, "first"), urgent=True),
            db.together(bad, urgent=True),
            db.together(lambda session: _instance(session, "last"), urgent=True),
            return_exceptions=True,
        )

        assert isinstance(results[1], ValueError) and "wrong" in str(results[1])
        async with db() as session:
            kept = set((await session.scalars(select(Instance.id))).all())
        assert kept == {"first", "last"}
    finally:
        await db.close()


async def test_parts_that_conflict_in_one_group_fail_alone(database_url: str) -> None:
    """Three parts inserting the same key in one group: the first is kept, the others get the database's error."""
    db = open_database(database_url)
    try:
        async def same_key(session: AsyncSession) -> str:
            return await _instance(session, "same")

        results = await asyncio.gather(*(db.together(same_key) for _ in range(3)), return_exceptions=True)

        assert sum(not isinstance(result, Exception) for result in results) == 1
        async with db() as session:
            assert (await session.scalars(select(Instance.id))).all() == ["same"]
    finally:
        await db.close()


async def test_an_updates_handled_mark_commits_with_its_part_and_is_not_written_again(database_url: str) -> None:
    """Two handlers' parts in one group: the failing one's mark is rolled back with it (and would be made again), the
    other's commits; once committed, the handler's later transactions do not mark it again."""
    db = open_database(database_url)
    try:
        async with db.begin() as session:
            rows = [{"update_id": update_id, "chat_id": update_id, "raw": "{}"} for update_id in (1, 2)]
            await updates.store(session, rows, "me", utcnow() + timedelta(minutes=1))

        async def handler(update_id: int, fails: bool) -> updates.Handling:
            handling = updates.Handling(update_id)
            updates.HANDLING.set(handling)

            async def visit(session: AsyncSession) -> None:
                await _instance(session, f"visit-{update_id}")
                await updates.settle(session)
                if fails:
                    raise ValueError("this handler failed")

            try:
                await db.together(visit, urgent=True)
            except ValueError:
                pass
            return handling

        failed, handled = await asyncio.gather(handler(1, True), handler(2, False))

        assert (failed.settled, failed.durable) == (None, False)
        assert handled.durable
        async with db() as session:
            assert (await session.scalars(select(TgUpdate.update_id).where(TgUpdate.handled_at.is_(None)))).all() == [1]

        async with db.begin() as session:
            await session.execute(update(TgUpdate).values(handled_at=None))
        token = updates.HANDLING.set(handled)
        try:
            async with db.begin() as session:
                await _instance(session, "after the greeting")
                await updates.settle(session)
        finally:
            updates.HANDLING.reset(token)
        async with db() as session:
            assert await updates.unhandled(session) == 2  # the mark was not written a second time
    finally:
        await db.close()
