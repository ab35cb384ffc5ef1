"""The durable inbox: every Telegram update is stored before Telegram is told it arrived, then handled once.

Polling (:meth:`Inbox.poll`) stores each ``getUpdates`` batch in one insert before the next ``getUpdates``
confirms it; the webhook stores the update before answering 200 (concurrent webhook requests share one
insert). The insert leases the new updates to this instance, which hands them to per-chat lanes: one chat's
updates run one at a time in ``update_id`` order, different chats at once. An update is marked handled in
its handler's first journal transaction (:func:`bot.db.updates.settle`), or, batched, after the handler
returns when none of its transactions committed a mark. The :attr:`Inbox.replay` loop renews the leases of what is under way and takes over
updates nobody holds: leftovers of a crash (after their lease ran out) and failed handlers (retried).
"""
from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import structlog
from aiogram import Bot, Dispatcher
from aiogram.dispatcher.middlewares.user_context import UserContextMiddleware
from aiogram.methods import GetUpdates
from aiogram.types import Update

from bot import metrics
from bot.db import updates
from bot.db.base import utcnow
from bot.db.session import Database
from bot.loops import Loop, wait_any

log = structlog.get_logger(__name__)

LEASE = 10.0  # seconds an instance holds the updates it took; renewed while a handler runs
POLL_TIMEOUT = 25  # seconds of a long poll
MAX_ATTEMPTS = 3  # an update whose handler failed this many times is given up (its error kept)
KEEP_HANDLED = timedelta(days=7)
PRUNE_EVERY = 600.0  # seconds between two deletions of what was handled more than KEEP_HANDLED ago
CLAIM_BATCH = 200

#: What a lane holds: the parsed update (received now) or its stored JSON (taken over).
Pending = Update | str


def chat_of(update: Update) -> int | None:
    """The chat (else the user) an update belongs to: its lane."""
    context = UserContextMiddleware.resolve_event_context(update)
    if context.chat is not None:
        return context.chat.id
    return context.user.id if context.user is not None else None


class Inbox:
    """Stores updates, hands them to the dispatcher in per-chat lanes, and takes over what nobody handles."""

    def __init__(self, db: Database, dp: Dispatcher, bot: Bot, *, handling_at_once: int = 64, lease: float = LEASE) -> None:
        """``handling_at_once``: updates (of different chats) handled at the same time; the rest wait, stored."""
        self.db = db
        self.dp = dp
        self.bot = bot
        self.lease = lease
        self.owner = uuid.uuid4().hex
        self.replay = Loop("inbox.replay", self._replay_round, every=1.0)
        self._lanes: dict[int | None, list[tuple[int, Pending]]] = {}
        self._running: dict[int | None, asyncio.Task[None]] = {}
        self._mine: set[int] = set()  # taken by this instance and not yet marked handled
        self._arriving: list[tuple[Sequence[Update], asyncio.Future[None]]] = []
        self._storing: asyncio.Task[None] | None = None
        self._done: list[int] = []
        self._marking: asyncio.Task[None] | None = None
        self._renewed = 0.0
        self._pruned = 0.0
        self._idle = asyncio.Event()
        self._handling = asyncio.Semaphore(handling_at_once)
        self._idle.set()

    # ------------------------------------------------------------ intake
    async def accept(self, batch: Sequence[Update]) -> None:
        """Store ``batch`` durably (returns once it is committed), then start handling the new updates.

        Batches arriving while one is being written go into the next insert together."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._arriving.append((batch, done))
        if self._storing is None or self._storing.done():
            self._storing = asyncio.create_task(self._store())
        await done

    async def _store(self) -> None:
        while self._arriving:
            arriving, self._arriving = self._arriving, []
            received = {update.update_id: update for batch, _ in arriving for update in batch}
            rows = [{"update_id": update_id, "chat_id": chat_of(update), "raw": update.model_dump_json(exclude_unset=True)}
                    for update_id, update in received.items()]
            try:
                async with self.db.begin(urgent=True) as session:
                    new = await updates.store(session, rows, self.owner, self._lease_end())
            except Exception as exc:
                for _, done in arriving:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for _, done in arriving:
                if not done.done():
                    done.set_result(None)
            for row in rows:
                if row["update_id"] in new:
                    self._enqueue(row["update_id"], row["chat_id"], received[row["update_id"]])

    async def poll(self, stop: asyncio.Event) -> None:
        """Long polling until ``stop``: each batch is stored before the next ``getUpdates`` confirms it."""
        request = GetUpdates(timeout=POLL_TIMEOUT, allowed_updates=self.dp.resolve_used_update_types())
        failures = 0
        while not stop.is_set():
            fetch = asyncio.ensure_future(self.bot(request, request_timeout=POLL_TIMEOUT + 30))
            await asyncio.wait([fetch, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
            if not fetch.done():
                fetch.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await fetch
                return
            try:
                batch = fetch.result()
                if batch:
                    await self.accept(batch)
                    request.offset = batch[-1].update_id + 1
                failures = 0
            except Exception as exc:  # Telegram or the database unreachable: the batch is fetched again
                failures += 1
                delay = min(0.5 * 2 ** failures, 30.0)
                log.warning("inbox.poll_failed", error=f"{type(exc).__name__}: {exc}", retry_in=delay)
                await wait_any(delay, stop)

    # ------------------------------------------------------------- lanes
    def _enqueue(self, update_id: int, chat_id: int | None, update: Pending) -> None:
        if update_id in self._mine:
            return
        self._mine.add(update_id)
        heapq.heappush(self._lanes.setdefault(chat_id, []), (update_id, update))
        if chat_id not in self._running:
            self._idle.clear()
            self._running[chat_id] = asyncio.create_task(self._drain(chat_id))

    async def _drain(self, chat_id: int | None) -> None:
        lane = self._lanes[chat_id]
        try:
            while lane:
                async with self._handling:  # a flood waits its turn, stored: it does not crowd the database
                    update_id, update = heapq.heappop(lane)
                    await self._handle(update_id, update)
        finally:
            del self._lanes[chat_id], self._running[chat_id]
            if not self._running:
                self._idle.set()

    async def _handle(self, update_id: int, update: Pending) -> None:
        handling = updates.Handling(update_id)
        token = updates.HANDLING.set(handling)
        try:
            if isinstance(update, str):
                update = Update.model_validate_json(update, context={"bot": self.bot})
            await self.dp.feed_update(self.bot, update)
        except Exception as exc:
            log.exception("inbox.update_failed", update_id=update_id)
            await self._failed(update_id, exc)
        else:
            if not handling.durable:
                self._mark(update_id)
            else:
                self._mine.discard(update_id)
        finally:
            updates.HANDLING.reset(token)

    def _mark(self, update_id: int) -> None:
        """Mark handled, batched: every id finished while a batch is being written goes into the next."""
        self._done.append(update_id)
        if self._marking is None or self._marking.done():
            self._marking = asyncio.create_task(self._write_marks())

    async def _write_marks(self) -> None:
        while self._done:
            batch, self._done = self._done, []
            try:
                async with self.db.begin() as session:
                    await updates.mark_handled(session, batch)
            except Exception:  # the lease runs out and the updates are handled again: handlers are idempotent
                log.exception("inbox.mark_failed", updates=len(batch))
            self._mine.difference_update(batch)

    async def _failed(self, update_id: int, exc: Exception) -> None:
        """Handled again later (5 s, 10 s… after), up to :data:`MAX_ATTEMPTS` times in all; the error is kept."""
        try:
            async with self.db.begin() as session:
                await updates.fail(session, update_id, f"{type(exc).__name__}: {exc}", max_attempts=MAX_ATTEMPTS, backoff=5.0)
        except Exception:
            log.exception("inbox.fail_not_recorded", update_id=update_id)
        finally:
            self._mine.discard(update_id)

    # ------------------------------------------------------------ replay
    def _lease_end(self) -> datetime:
        return utcnow() + timedelta(seconds=self.lease)

    async def _replay_round(self) -> bool:
        """Renew the leases of what is under way; take over updates nobody holds."""
        if self._mine and time.monotonic() - self._renewed > self.lease / 3:
            async with self.db.begin() as session:
                await updates.renew(session, list(self._mine), self.owner, self._lease_end())
            self._renewed = time.monotonic()
        now = utcnow()
        if time.monotonic() - self._pruned > PRUNE_EVERY:
            async with self.db.begin() as session:
                await updates.prune(session, now - KEEP_HANDLED)
            self._pruned = time.monotonic()
        async with self.db() as session:
            if not await updates.any_claimable(session, self.owner, now):
                return False
        async with self.db.begin() as session:
            taken = await updates.claim(session, self.owner, now, self._lease_end(), CLAIM_BATCH)
        if taken:
            log.info("inbox.taken_over", updates=len(taken))
        for row in taken:
            self._enqueue(row.update_id, row.chat_id, row.raw)
        return len(taken) == CLAIM_BATCH

    async def probe(self) -> None:
        """Refresh the inbox's lag gauge (at a scrape of ``/metrics``)."""
        async with self.db() as session:
            oldest = await updates.oldest_unhandled(session)
        metrics.INBOX_LAG.set((utcnow() - oldest).total_seconds() if oldest is not None else 0.0)

    async def idle(self) -> None:
        """Wait until no update is being handled and every handled mark is written (shutdown, tests)."""
        while True:
            await self._idle.wait()
            if self._marking is not None and not self._marking.done():
                await self._marking
                continue
            if self._storing is not None and not self._storing.done():
                await self._storing
                continue
            if self._idle.is_set():
                return
