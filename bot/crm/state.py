"""Whether the sync may talk to amoCRM now: discovery done without problems, account not blocked, token valid.

A 403 (blocked) or a dead token stops every instance (the state is in ``kv``) until a probe
succeeds ``blocked_probe`` seconds later or an operator runs ``optobot crm retry``.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.crm import store
from bot.crm.client import AmoAuthError, AmoBlocked, AmoClient, AmoError
from bot.crm.config import CrmConfig
from bot.crm.discovery import AccountMap, discover
from bot.crm.outbox import Clock
from bot.quiz import Quiz

log = structlog.get_logger(__name__)

REDISCOVER = timedelta(seconds=60)


class SyncState:
    def __init__(
        self, db: async_sessionmaker[AsyncSession], client: AmoClient, config: CrmConfig, quiz: Quiz, clock: Clock,
        on_discovered: Callable[[AccountMap], None] | None = None,
    ) -> None:
        self.db = db
        self.client = client
        self.config = config
        self.quiz = quiz
        self.clock = clock
        self.on_discovered = on_discovered
        self.account: AccountMap | None = None
        self.problems: list[str] = []
        self._next_discovery: datetime | None = None

    async def discover(self) -> AccountMap | None:
        """Resolve the configured names; with problems the sync waits (and says why)."""
        self._next_discovery = self.clock() + REDISCOVER
        try:
            account, problems = await discover(self.client, self.config, self.quiz)
        except (AmoBlocked, AmoAuthError) as exc:
            await self.stop(exc)
            return None
        except AmoError as exc:
            log.warning("amocrm.discovery_failed", error=str(exc), note="CRM work waits in the outbox")
            return None
        self.problems = problems
        for problem in problems:
            log.error("amocrm.misconfigured", problem=problem)
        for warning in account.warnings:
            log.warning("amocrm.incomplete", warning=warning)
        self.account = None if problems else account
        await self._save({"state": "misconfigured", "problems": problems} if problems else None)
        if not problems:
            log.info("amocrm.discovered", stages=len(account.stages), fields=len(account.lead_fields), timezone=str(account.timezone))
            if self.on_discovered is not None:
                self.on_discovered(account)
        return self.account

    async def ready(self) -> AccountMap | None:
        """The account map if the sync may run now, else None."""
        now = self.clock()
        async with self.db() as session:
            state = await store.read(session, store.STATE) or {}
        if state.get("state") in ("blocked", "unauthorized"):
            if now < datetime.fromisoformat(state["retry_at"]):
                return None
            try:
                await self.client.get("/api/v4/account")
            except (AmoBlocked, AmoAuthError) as exc:
                await self.stop(exc)
                return None
            except AmoError:
                return None
            log.info("amocrm.resumed", after=state["state"])
            await self._save(None)
        return await self.known()

    async def known(self) -> AccountMap | None:
        """The account map (discovered now if it is missing and the last try is a while ago)."""
        if self.account is None and (self._next_discovery is None or self.clock() >= self._next_discovery):
            await self.discover()
        return self.account

    async def stop(self, exc: AmoError) -> None:
        """Stop every instance loudly; the outbox keeps everything."""
        kind = "blocked" if isinstance(exc, AmoBlocked) else "unauthorized"
        retry_at = self.clock() + timedelta(seconds=self.config.client.blocked_probe)
        log.error("amocrm.sync_stopped", state=kind, reason=str(exc), probe_at=retry_at.isoformat(), note="nothing is lost: items stay queued")
        await self._save({"state": kind, "reason": str(exc), "since": self.clock().isoformat(), "retry_at": retry_at.isoformat()})

    async def _save(self, state: dict[str, object] | None) -> None:
        async with self.db.begin() as session:
            await store.write(session, store.STATE, state or {"state": "ok"})
