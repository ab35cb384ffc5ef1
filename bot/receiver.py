"""Exactly one receiver of Telegram's updates among the instances, elected through a lock each of them tries.

Without ``PUBLIC_URL`` the holder long-polls (Telegram answers 409 Conflict to a second ``getUpdates`` for one
token); with it every instance takes ``POST /webhooks/telegram`` and the holder registers the webhook with the
secret token kept in the database (:mod:`bot.db.webhook`), which every instance checks. The lock dies with its
holder, so no lease has to run out: on PostgreSQL it is a session advisory lock on a connection of its own (the
server drops it when the connection closes, at once for a killed process); on SQLite, which is one host's file,
an exclusive ``flock`` on a file beside the database (the kernel drops it with the process). The others try
again every :data:`RETRY` seconds, and the holder checks its connection every :data:`CHECK` seconds and stops
receiving when it is gone, so a dead holder is replaced within about :data:`RETRY` seconds.

A holder cut off by the network without its socket closing (no FIN, no RST) would keep the advisory lock until
PostgreSQL noticed the dead connection (hours with default TCP settings, never behind a proxy that stays up). So
the holder stops receiving when a check gets no answer within :data:`ANSWER` seconds, and an instance that finds
the lock taken ends the holder's session (``pg_terminate_backend``) once it has said nothing for :data:`SILENT`
seconds (its checks keep it talking every :data:`CHECK` s): a silent holder is replaced within about
:data:`SILENT` + :data:`RETRY` seconds, after it stopped receiving itself (:data:`CHECK` + :data:`ANSWER` < :data:`SILENT`).
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from typing import Protocol

import structlog
from aiogram import Bot
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot import metrics
from bot.inbox import Inbox
from bot.loops import wait_any
from bot.telegram_webhook import TELEGRAM_WEBHOOK_PATH

log = structlog.get_logger(__name__)

RETRY = 2.0  # seconds between tries of an instance that does not hold the lock
CHECK = 2.0  # seconds between the holder's checks that it still holds it
ANSWER = 5.0  # seconds a statement on the lock's connection may take before the connection counts as lost
SILENT = 15.0  # seconds without a word from the holder's session after which another instance ends it
_LOCK_KEY = 0x0B07_0921  # the advisory lock of the receiver (PostgreSQL)
#: Ends the session holding the lock if it has been silent (no statement begun or ended) for ``silent`` seconds.
_END_SILENT_HOLDER = """
SELECT count(pg_terminate_backend(activity.pid)) FROM pg_locks AS held JOIN pg_stat_activity AS activity USING (pid)
WHERE held.locktype = 'advisory' AND held.granted AND held.classid = 0 AND held.objid = :key AND held.objsubid = 1
  AND held.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND activity.state_change < clock_timestamp() - make_interval(secs => :silent)
"""


class Lock(Protocol):
    async def acquire(self) -> bool: ...
    async def held(self) -> bool: ...
    async def release(self) -> None: ...


class AdvisoryLock:
    """A PostgreSQL session advisory lock held on a connection of its own, lost with it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._connection: AsyncConnection | None = None

    async def _scalar(self, sql: str, **params: object) -> object:
        try:
            async with asyncio.timeout(ANSWER):  # a silent network answers nothing, ever
                if self._connection is None:
                    self._connection = await self.engine.connect()
                value = (await self._connection.execute(text(sql), params)).scalar_one()
                await self._connection.commit()  # the lock outlives the transaction; no transaction stays open
            return value
        except Exception:
            await self._drop()
            raise

    async def acquire(self) -> bool:
        """Take the lock if it is free; if its holder has been silent for :data:`SILENT` seconds, end its session
        (the lock is free at the next try)."""
        if await self._scalar("SELECT pg_try_advisory_lock(:key)", key=_LOCK_KEY):
            return True
        if await self._scalar(_END_SILENT_HOLDER, key=_LOCK_KEY, silent=SILENT):
            log.warning("receiver.silent_holder_ended", silent_for=SILENT)
        return False

    async def held(self) -> bool:
        try:
            await self._scalar("SELECT 1")
        except Exception as exc:
            log.warning("receiver.lock_lost", error=f"{type(exc).__name__}: {exc}")
            return False
        return True

    async def release(self) -> None:
        """Give the lock up (if held) and close the connection."""
        await self._drop()

    async def _drop(self) -> None:
        """Close the connection for good (not back to the pool, where it would keep the lock)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.invalidate()
            with contextlib.suppress(Exception):
                await connection.close()


class FileLock:
    """An exclusive ``flock`` on ``path`` (SQLite: the database's host), lost with the process; no path: always ours."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._fd: int | None = None

    async def acquire(self) -> bool:
        if self.path is None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    async def held(self) -> bool:
        return True

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def receiver_lock(engine: AsyncEngine) -> Lock:
    """The lock of the database behind ``engine``: advisory on PostgreSQL, a file beside a SQLite file."""
    if engine.dialect.name == "postgresql":
        return AdvisoryLock(engine)
    database = make_url(str(engine.url)).database
    return FileLock(f"{database}.receiver.lock" if database and database != ":memory:" else None)


class Receiver:
    """Takes the lock when it can; while holding it, polls (no ``public_url``) or registers the webhook."""

    def __init__(self, lock: Lock, bot: Bot, inbox: Inbox, *, public_url: str | None, allowed_updates: list[str]) -> None:
        self.lock = lock
        self.bot = bot
        self.inbox = inbox
        self.public_url = public_url
        self.allowed_updates = allowed_updates
        self.secret_token = ""  # the webhook's (set by the app from the database before :meth:`run`)
        self.holding = False

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: try the lock every :data:`RETRY` seconds; receive while holding it; release it at the end."""
        try:
            while not stop.is_set():
                try:
                    acquired = await self.lock.acquire()
                except Exception as exc:  # the database unreachable: tried again
                    log.warning("receiver.lock_failed", error=f"{type(exc).__name__}: {exc}")
                    acquired = False
                if not acquired:
                    await wait_any(RETRY, stop)
                    continue
                await self._hold(stop)
        finally:
            await self.lock.release()  # the connection it tried on

    async def _hold(self, stop: asyncio.Event) -> None:
        log.info("receiver.elected", mode="webhook" if self.public_url else "polling")
        self.holding = True
        metrics.RECEIVER.set(1)
        term = asyncio.Event()  # set when this instance stops receiving: ``stop``, or the lock lost
        receiving = asyncio.create_task(self._receive(term))
        try:
            while not stop.is_set() and not receiving.done() and await self.lock.held():
                await wait_any(CHECK, stop)
        finally:
            term.set()
            with contextlib.suppress(asyncio.CancelledError):
                await receiving  # polling ends with what it fetched stored, before the lock goes
            self.holding = False
            metrics.RECEIVER.set(0)
            await self.lock.release()

    async def _receive(self, term: asyncio.Event) -> None:
        """Polling: drop any webhook, then poll until ``term``. Webhook: register it (retried until Telegram takes it)."""
        failures = 0
        while not term.is_set():
            try:
                if self.public_url is None:
                    await self.bot.delete_webhook()
                    await self.inbox.poll(term)
                    return
                await self.bot.set_webhook(self.public_url + TELEGRAM_WEBHOOK_PATH, secret_token=self.secret_token,
                                           allowed_updates=self.allowed_updates)
                log.info("receiver.webhook_set", url=self.public_url + TELEGRAM_WEBHOOK_PATH)
                await term.wait()
                return
            except Exception as exc:
                failures += 1
                delay = min(0.5 * 2 ** failures, 30.0)
                log.warning("receiver.telegram_failed", error=f"{type(exc).__name__}: {exc}", retry_in=delay)
                await wait_any(delay, term)
