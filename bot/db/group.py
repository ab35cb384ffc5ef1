"""Group commit: many small write transactions of concurrent callers written as one.

Each write transaction on SQLite costs a turn of the one writer (and on PostgreSQL a commit); a burst of
buyers therefore queues on commits, not on work. :class:`GroupCommit` runs the work of every caller that
arrives while a transaction is being written in the next one, one part after the other, each in the caller's own
context (so :data:`bot.db.updates.HANDLING` and log context see the caller's update). A part that fails, or a
transaction that fails as a whole (a commit refused, a deadlock), fails the group: every part is then run alone, each
in a transaction of its own, and a failing part's caller gets its error. A part may therefore run twice, the first
run rolled back, and must only touch the database.

There are no savepoints around the parts: on PostgreSQL they cost two statements a part (a quarter of a greeting's),
and on SQLite the driver would open its transaction at the first savepoint, so the parts' reads would hold a snapshot
that another process's write makes stale («database is locked» instead of a wait).
"""
from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

log = structlog.get_logger(__name__)
T = TypeVar("T")

Work = Callable[[AsyncSession], Awaitable[T]]


@dataclass
class _Part(Generic[T]):
    work: Work[T]
    context: contextvars.Context
    done: asyncio.Future[T] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class GroupCommit:
    """``await group(work)`` runs ``work(session)`` in a write transaction shared with whoever else is waiting;
    returns what ``work`` returned once the transaction committed."""

    def __init__(self, begin: Callable[[], Any], name: str) -> None:
        self._begin = begin  # a write transaction: ``async with begin() as session``
        self.name = name
        self._waiting: list[_Part[Any]] = []
        self._writing: asyncio.Task[None] | None = None

    async def __call__(self, work: Work[T]) -> T:
        part: _Part[T] = _Part(work, contextvars.copy_context())
        self._waiting.append(part)
        if self._writing is None or self._writing.done():
            self._writing = asyncio.create_task(self._write())
        return await part.done

    async def _write(self) -> None:
        while self._waiting:
            parts, self._waiting = self._waiting, []
            try:
                results = await self._together(parts)
            except asyncio.CancelledError:
                for part in (*parts, *self._waiting):
                    part.done.cancel()
                raise
            except Exception:
                log.warning("db.group_failed", group=self.name, parts=len(parts), exc_info=True)
                for part in parts:
                    await self._alone(part)
                continue
            for part, value in zip(parts, results):
                if not part.done.done():
                    part.done.set_result(value)

    async def _together(self, parts: list[_Part[Any]]) -> list[Any]:
        async with self._begin() as session:
            return [await asyncio.create_task(part.work(session), context=part.context) for part in parts]

    async def _alone(self, part: _Part[Any]) -> None:
        try:
            async with self._begin() as session:
                value = await asyncio.create_task(part.work(session), context=part.context)
        except Exception as exc:
            if not part.done.done():
                part.done.set_exception(exc)
        else:
            if not part.done.done():
                part.done.set_result(value)
