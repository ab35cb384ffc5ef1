"""Engine and session factory for any SQLAlchemy async URL (aiosqlite by default, asyncpg for scale)."""
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from typing import TypeVar

from bot.db.group import GroupCommit, Work

T = TypeVar("T")


def _engine(url: str) -> AsyncEngine:
    """The engine; a SQLite file gets WAL, foreign keys and a busy timeout."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, pool_size=20, max_overflow=0, pool_timeout=60)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk before it returns, so what was acknowledged to Telegram (an update's offset,
            # a webhook's 200) survives a power cut or a crashed VM, not only a killed process (~0.3 ms a commit)
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


class WriterLock:
    """One writer at a time, first come first served, except that urgent writers (on the way to
    a reply to a buyer) go before the rest."""

    def __init__(self) -> None:
        self._busy = False
        self._queues: tuple[deque[asyncio.Future[None]], deque[asyncio.Future[None]]] = (deque(), deque())

    async def acquire(self, *, urgent: bool = False) -> None:
        if not self._busy:
            self._busy = True
            return
        waiter = asyncio.get_running_loop().create_future()
        self._queues[0 if urgent else 1].append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # ownership was handed over just as we were cancelled
            raise

    def release(self) -> None:
        """Hand the lock to the next waiter (urgent first), or free it."""
        for queue in self._queues:
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self._busy = False


class Database(async_sessionmaker[AsyncSession]):
    """``db()`` opens a session for reads; ``db.begin()`` a write transaction.

    SQLite takes one writer at a time and its busy handler backs off in sleeps of up to
    100 ms, so concurrent writers collapse under load: on SQLite, write transactions of this
    process queue on a :class:`WriterLock` instead (``urgent=True`` jumps the queue), while
    reads run in parallel (WAL). PostgreSQL needs none of it.

    ``await db.together(work)`` runs ``work(session)`` in a write transaction shared with the other callers
    waiting at that moment (:class:`bot.db.group.GroupCommit`): a burst of buyers costs a few commits, not one
    each.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine, expire_on_commit=False)
        self.engine = engine
        self._writer = WriterLock() if engine.dialect.name == "sqlite" else None
        self._groups = (GroupCommit(lambda: self.begin(urgent=True), "urgent"), GroupCommit(self.begin, "routine"))

    async def together(self, work: Work[T], *, urgent: bool = False) -> T:
        """Run ``work(session)`` in a write transaction shared with the others waiting (group commit)."""
        return await self._groups[0 if urgent else 1](work)

    @asynccontextmanager
    async def begin(self, *, urgent: bool = False) -> AsyncIterator[AsyncSession]:  # type: ignore[override]
        if self._writer is None:
            async with super().begin() as session:
                yield session
            return
        await self._writer.acquire(urgent=urgent)
        try:
            async with super().begin() as session:
                yield session
        finally:
            self._writer.release()

    async def close(self) -> None:
        """Close every pooled connection (the end of the process's use of the database)."""
        await self.engine.dispose()


def open_database(url: str) -> Database:
    """The one way to reach a database: its engine (``.engine``; the same pool settings and SQLite
    pragmas everywhere) and the session factory, together; ``await db.close()`` when done."""
    return Database(_engine(url))


@asynccontextmanager
async def database(url: str, *, upgrade: bool = False) -> AsyncIterator[Database]:
    """:func:`open_database` for the length of a block, migrated first when ``upgrade`` (the CLI's commands)."""
    db = open_database(url)
    try:
        if upgrade:
            from bot.db import migrate  # Alembic loads only for the commands that migrate

            await migrate.upgrade(db.engine)
        yield db
    finally:
        await db.close()
