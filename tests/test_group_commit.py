"""Group commit (``db.together``): concurrent callers share transactions, a failing part fails alone, each part
runs in its caller's context — on a real SQLite file and PostgreSQL."""
from __future__ import annotations

import asyncio
import contextvars

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import Instance
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
