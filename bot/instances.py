"""This process among the running instances: it joins at start, beats every few seconds, leaves at exit.

Several instances may share one PostgreSQL database, and then they must share Redis too (Telegram's
global rate, per-chat spacing, amoCRM's requests per second): an instance that finds another alive on
PostgreSQL without ``REDIS_URL`` refuses to start, in one line naming ``REDIS_URL``. An instance is
alive while its heartbeat is younger than ``ALIVE``; a row left by a process that died on this host
(its pid gone, or ours from before this process started, as after a container restart) does not count.
"""
from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog

from bot.config import ConfigError
from bot.db import instances
from bot.db.base import utcnow
from bot.db.models import Instance
from bot.db.session import Database
from bot.loops import Loop

log = structlog.get_logger(__name__)

ROLES = ("all", "web", "worker")  # what `optobot run --role` may run (bot.app.App)
HEARTBEAT = 5.0  # seconds between heartbeats
ALIVE = timedelta(seconds=20)  # an instance silent for longer is dead
FORGET = timedelta(hours=1)  # rows of dead instances are dropped after this
PROCESS_STARTED = utcnow()  # (about) when this process started: this module loads with the command


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Presence:
    """This instance's row in ``instances``: :meth:`join` at start, :meth:`run` in the background, :meth:`leave` at exit."""

    def __init__(self, db: Database, role: str, *, redis_url: str | None, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.role = role
        self.redis_url = redis_url
        self.clock = clock
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.id = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:8]}"
        self.joined = False

    def _alive(self, other: Instance) -> bool:
        """Another instance alive: not a row of a process that died on this host (its pid gone, or ours before we started)."""
        if other.host != self.host:
            return True
        if other.pid == self.pid:
            return other.started_at >= PROCESS_STARTED  # an earlier process with our pid (a restarted container) is dead
        return pid_alive(other.pid)

    async def join(self) -> None:
        """Add this instance; a :class:`ConfigError` naming REDIS_URL if another is alive on PostgreSQL without Redis."""
        now = self.clock()
        async with self.db.begin() as session:
            await instances.lock_joining(session)
            await instances.forget_before(session, now - FORGET)
            others = [other for other in await instances.seen_since(session, now - ALIVE) if self._alive(other)]
            if others and self.db.engine.dialect.name == "postgresql" and not self.redis_url:
                other = others[0]
                raise ConfigError(
                    f"optobot: REDIS_URL: another instance runs on this database ({other.host} pid {other.pid}, role {other.role}); "
                    "several instances must share Redis for Telegram's and amoCRM's rate limits: set REDIS_URL on every instance, "
                    "or stop the other one")
            session.add(Instance(id=self.id, host=self.host, pid=self.pid, role=self.role, started_at=now, seen_at=now))
        self.joined = True
        log.debug("instance.joined", instance=self.id, role=self.role, others=len(others))

    async def beat(self) -> None:
        if not self.joined:
            return
        async with self.db.begin() as session:
            if not await instances.beat(session, self.id, self.clock()):  # dropped while we were stalled: back in
                now = self.clock()
                session.add(Instance(id=self.id, host=self.host, pid=self.pid, role=self.role, started_at=now, seen_at=now))

    async def run(self, stop: asyncio.Event) -> None:
        await Loop("instances.heartbeat", self.beat, every=HEARTBEAT, first_after=HEARTBEAT).run(stop)

    async def leave(self) -> None:
        """Remove our row (at exit; if the database is gone, the row simply ages out)."""
        if not self.joined:
            return
        self.joined = False
        try:
            async with self.db.begin() as session:
                await instances.remove(session, self.id)
        except Exception as exc:
            log.warning("instance.leave_failed", instance=self.id, error=repr(exc))
