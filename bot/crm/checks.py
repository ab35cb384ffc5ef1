"""Periodic checks: no open lead without an open task; leads (and REMINDER_TASK_TYPE tasks) changed in amoCRM re-read
(webhooks get lost)."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

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
from bot.crm.webhooks import LeadChange, TaskChange, apply_changes, apply_tasks, deal_fields
from bot.db import leads
from bot.db.models import Lead
from bot.funnel import CLOSED
from bot.hours import ALWAYS, WorkingHours
from bot.journal import TASK_COMPLETED, TASK_OPEN, Journal
from bot.loops import Loop, Round

log = structlog.get_logger(__name__)

CHUNK = 100  # lead ids per task query
NO_TASK = "no_task"
FIRST_CHECK = 5.0  # seconds after start


class Checks:
    def __init__(
        self, db: async_sessionmaker[AsyncSession], client: AmoClient, state: SyncState, journal: Journal,
        config: CrmConfig, composer: Composer, clock: Clock, hours: WorkingHours = ALWAYS, *, task_type: int | None = None,
    ) -> None:
        self.db = db
        self.client = client
        self.state = state
        self.journal = journal
        self.task_type = task_type  # REMINDER_TASK_TYPE: its tasks are re-read too
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
            await store.lock(session, store.NO_TASK_CHECK)  # instances checking at once queue in turn: each sees the other's task
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
        found, latest = await self._changed(store.RECONCILE, "/api/v4/leads", "leads", [])
        changes = [LeadChange(lead["id"], lead.get("status_id"), lead.get("pipeline_id"), lead.get("responsible_user_id"), lead.get("price"),
                              deal_fields(lead.get("custom_fields_values"))) for lead in found]
        moved = await apply_changes(self.db, self.journal, account, changes, "reconcile") if changes else 0
        await self._advance(store.RECONCILE, latest)
        if self.task_type is not None:
            await self.reconcile_tasks()
        return moved

    async def reconcile_tasks(self) -> int:
        """Re-read the REMINDER_TASK_TYPE tasks changed since the last run (a lost webhook); returns how many were journalled.
        A task journalled again unchanged is a no-op for the follow-ups."""
        filters = [("filter[task_type]", self.task_type), ("filter[entity_type]", "leads")]
        found, latest = await self._changed(store.RECONCILE_TASKS, "/api/v4/tasks", "tasks", filters)
        changes = [TaskChange(task["id"], task["entity_id"], task.get("task_type_id"), task.get("text") or "", task.get("complete_till"),
                              TASK_COMPLETED if task.get("is_completed") else TASK_OPEN)
                   for task in found if task.get("entity_type") == "leads" and task.get("entity_id")]
        journalled = await apply_tasks(self.db, self.journal, self.task_type, changes, "reconcile") if changes else 0
        await self._advance(store.RECONCILE_TASKS, latest)
        return journalled

    async def _changed(self, cursor_key: str, path: str, entity: str, filters: list[tuple[str, Any]]) -> tuple[list[dict[str, Any]], int]:
        """What amoCRM lists at ``path`` updated since the cursor ``cursor_key`` (first run: two intervals back), and the
        latest ``updated_at`` among them (the cursor moves there once they are applied: :meth:`_advance`)."""
        async with self.db() as session:
            cursor = (await store.read(session, cursor_key) or {}).get("updated_at")
        if cursor is None:
            cursor = int((self.clock() - timedelta(seconds=self.config.reconcile_interval * 2)).timestamp())
        found, latest = [], cursor
        async for item in self.client.pages(path, entity, [*filters, ("filter[updated_at][from]", cursor), ("order[updated_at]", "asc")]):
            found.append(item)
            latest = max(latest, item.get("updated_at") or latest)
        return found, latest

    async def _advance(self, cursor_key: str, latest: int) -> None:
        """Move the cursor to ``latest`` (never back: another instance's reconcile may have moved it further)."""
        async with self.db.begin() as session:
            await store.lock(session, cursor_key)
            cursor = (await store.read(session, cursor_key) or {}).get("updated_at")
            await store.write(session, cursor_key, {"updated_at": max(latest, cursor or latest)})

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
