"""The operations endpoints: ``/healthz`` (the process answers), ``/readyz`` (it can do its work) and ``/metrics``.

``/readyz`` answers 200 when the database answers, its schema is at the code's migrations, Redis
answers ``PING`` (when ``REDIS_URL`` is set) and Telegram answered within the last minute (else a
``getMe`` is tried); otherwise 503, with the reason of each failed check. Each check is bounded in time.
From SIGTERM on it answers 503 (``"instance": "stopping"``) so that a load balancer sends nothing more.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiogram import Bot
from aiohttp import web
from sqlalchemy import text

from bot import metrics
from bot.config import first_line
from bot.db import migrate
from bot.db.session import Database

CHECK_TIMEOUT = 5.0  # seconds each readiness check may take
TELEGRAM_FRESH = 60.0  # seconds an answer of Telegram counts as "reached recently"


class Ops:
    """The handlers of ``/healthz``, ``/readyz`` and ``/metrics`` for one instance."""

    def __init__(self, db: Database, bot: Bot, redis_url: str | None, probes: list[metrics.Probe]) -> None:
        self.db = db
        self.bot = bot
        self.redis_url = redis_url
        self.probes = probes
        self.heads = migrate.heads()
        self.stopping = False  # set at SIGTERM: the load balancer stops sending work here

    @property
    def routes(self) -> list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]]:
        return [("GET", "/healthz", self.healthz), ("GET", "/readyz", self.readyz), ("GET", "/metrics", self.metrics)]

    async def healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def readyz(self, _: web.Request) -> web.Response:
        if self.stopping:
            return web.json_response({"ok": False, "checks": {"instance": "stopping"}}, status=503)
        names = ["database", "migrations", "telegram", *(["redis"] if self.redis_url else [])]
        results = await asyncio.gather(*(self._bounded(getattr(self, f"_{name}")) for name in names))
        checks = dict(zip(names, results))
        ready = all(result == "ok" for result in results)
        return web.json_response({"ok": ready, "checks": checks}, status=200 if ready else 503)

    async def metrics(self, _: web.Request) -> web.Response:
        body, content_type = await metrics.render(self.probes)
        return web.Response(body=body, headers={"Content-Type": content_type})

    @staticmethod
    async def _bounded(check: Callable[[], Awaitable[str]]) -> str:
        try:
            return await asyncio.wait_for(check(), CHECK_TIMEOUT)
        except TimeoutError:
            return f"no answer in {CHECK_TIMEOUT:g} s"
        except Exception as exc:
            return f"{type(exc).__name__}: {first_line(exc)}"

    async def _database(self) -> str:
        async with self.db() as session:
            await session.execute(text("SELECT 1"))
        return "ok"

    async def _migrations(self) -> str:
        current = await migrate.current(self.db.engine)
        if current != self.heads:
            return f"database at {', '.join(sorted(current)) or 'nothing'}, code at {', '.join(sorted(self.heads))}: run optobot db upgrade"
        return "ok"

    async def _redis(self) -> str:
        from redis.asyncio import Redis

        async with Redis.from_url(self.redis_url) as redis:  # type: ignore[arg-type]
            await redis.ping()
        return "ok"

    async def _telegram(self) -> str:
        if metrics.reached_ago() > TELEGRAM_FRESH:
            await self.bot.get_me()
            metrics.reached()
        return "ok"
