"""Start-token claims in batches: a burst of buyers opening the bot costs one short write per batch."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import submissions

Pending = tuple[str, int, asyncio.Future[int | None]]


class TokenClaims:
    """Every claim that arrives while a batch is being written goes into the next batch, written as
    one ``UPDATE … RETURNING`` (SQLite takes one writer at a time: one claim per transaction would
    make the 50th buyer of a burst wait for 49 commits before being greeted)."""

    def __init__(self, db: async_sessionmaker[AsyncSession], since: Callable[[], datetime]) -> None:
        self.db = db
        self.since = since
        self._pending: list[Pending] = []
        self._writer: asyncio.Task[None] | None = None

    async def claim(self, token: str, tg_user_id: int) -> int | None:
        """The lead id behind ``token`` if it is now this user's, else None."""
        done: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._pending.append((token, tg_user_id, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        return await done

    async def _write(self) -> None:
        while self._pending:
            batch: dict[str, tuple[int, asyncio.Future[int | None]]] = {}
            later: list[Pending] = []
            for token, user, done in self._pending:  # one user per token per statement; the next waits a batch
                (later.append((token, user, done)) if token in batch else batch.__setitem__(token, (user, done)))
            self._pending = later
            try:
                async with self.db.begin(urgent=True) as session:
                    given = await submissions.claim(session, {token: user for token, (user, _) in batch.items()}, self.since())
            except Exception as exc:
                for _, done in batch.values():
                    done.set_exception(exc)
                continue
            for token, (_, done) in batch.items():
                done.set_result(given.get(token))
