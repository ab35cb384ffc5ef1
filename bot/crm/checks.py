"""Periodic checks: no open lead without an open task; leads changed in amoCRM re-read (webhooks get lost)."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

import structlog
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.crm import outbox, store
from bot.crm.client import AmoAuthError, AmoBlocked, AmoClient, AmoError
from bot.crm.compose import Composer
from bot.crm.config import CrmConfig
from bot.crm.discovery import LOST, WON
from bot.crm.outbox import Clock
from bot.crm.state import SyncState
from bot.crm.webhooks import LeadChange, apply_changes, deal_fields
from bot.db import leads
from bot.db.models import Lead
from bot.funnel import CLOSED
from bot.hours import ALWAYS, WorkingHours
from bot.journal import Journal
from bot.loops import Loop, Round

log = structlog.get_logger(__name__)

CHUNK = 100  # lead ids per task query
NO_TASK = "no_task"
FIRST_CHECK = 5.0  # seconds after start


class Checks:
    def __init__(
        self, db: async_sessionmaker[AsyncSession], client: AmoClient, state: SyncState, journal: Journal,
        config: CrmConfig, composer: Composer, clock: Clock, hours: WorkingHours = ALWAYS,
    ) -> None:
        self.db = db
        self.client = client
        self.state = state
        self.journal = journal
        self.config = config
        self.composer = composer
        self.clock = clock
        self.hours = hours

    async def _open_leads(self) -> dict[int, int]:
        """crm lead id → local id of every open lead the bot manages."""
        query = select(Lead.crm_lead_id, Lead.id).where(
            Lead.crm_lead_id.is_not(None), Lead.merged_into_id.is_(None), Lead.stage.not_in(CLOSED),
            or_(Lead.crm_status_id.is_(None), Lead.crm_status_id.not_in((WON, LOST))),
        )
        async with self.db() as session:
            return {row.crm_lead_id: row.id for row in await session.execute(query)}

    async def ensure_tasks(self) -> int:
        """Queue a ``no_task`` task for every open lead amoCRM shows without an open task (and mark those leads
        ``no_task_since``); returns how many tasks were queued."""
        if await self.state.ready() is None:
            return 0
        open_leads = await self._open_leads()
        crm_ids = sorted(open_leads)
        covered: set[int] = set()
        for start in range(0, len(crm_ids), CHUNK):
            params = [("filter[is_completed]", 0), ("filter[entity_type]", "leads"),
                      *[("filter[entity_id][]", crm_id) for crm_id in crm_ids[start:start + CHUNK]]]
            covered |= {task["entity_id"] async for task in self.client.pages("/api/v4/tasks", "tasks", params)}
        bare = [open_leads[crm_id] for crm_id in crm_ids if crm_id not in covered]
        now = self.clock()
        deadline = timedelta(minutes=self.config.tasks[NO_TASK])
        queued = 0
        async with self.db.begin() as session:
            await leads.mark_without_task(session, bare, now)
            waiting = await outbox.leads_with_unfinished_tasks(session, bare)
            for lead_id in bare:
                if lead_id in waiting or await outbox.recent_task(session, lead_id, NO_TASK, now - deadline):
                    continue
                lead = await session.get(Lead, lead_id)
                due = self.hours.deadline(now, self.config.tasks[NO_TASK])
                outbox.add_task(session, lead_id, NO_TASK, self.composer.task(NO_TASK, lead, {}), due, now)
                queued += 1
        if queued:
            log.warning("crm.leads_without_task", queued=queued)
        return queued

    async def reconcile(self) -> int:
        """Re-read leads changed in amoCRM since the last run; returns how many moved stage locally."""
        account = await self.state.ready()
        if account is None:
            return 0
        async with self.db() as session:
            cursor = (await store.read(session, store.RECONCILE) or {}).get("updated_at")
        if cursor is None:
            cursor = int((self.clock() - timedelta(seconds=self.config.reconcile_interval * 2)).timestamp())
        params = [("filter[updated_at][from]", cursor), ("order[updated_at]", "asc")]
        changes, latest = [], cursor
        async for found in self.client.pages("/api/v4/leads", "leads", params):
            changes.append(LeadChange(found["id"], found.get("status_id"), found.get("pipeline_id"),
                                      found.get("responsible_user_id"), found.get("price"), deal_fields(found.get("custom_fields_values"))))
            latest = max(latest, found.get("updated_at") or latest)
        moved = await apply_changes(self.db, self.journal, account, changes, "reconcile") if changes else 0
        async with self.db.begin() as session:
            await store.write(session, store.RECONCILE, {"updated_at": latest})
        return moved

    def _guarded(self, check: Callable[[], Awaitable[object]]) -> Round:
        """``check`` as a loop round: amoCRM refusing the account stops the sync; amoCRM errors are logged."""
        async def round() -> None:
            try:
                await check()
            except (AmoBlocked, AmoAuthError) as exc:
                await self.state.stop(exc)
            except AmoError as exc:
                log.warning("crm.check_failed", check=check.__name__, error=str(exc))

        return round

    async def run(self, stop: asyncio.Event) -> None:
        """Each check at its own interval (the first a few seconds after start), until ``stop``."""
        intervals = {self.ensure_tasks: self.config.check_interval, self.reconcile: self.config.reconcile_interval}
        await asyncio.gather(*(Loop(f"crm.{check.__name__}", self._guarded(check), every=every, first_after=FIRST_CHECK).run(stop)
                               for check, every in intervals.items()))
