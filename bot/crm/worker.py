"""The outbox worker: claim a round, carry it out in batches, record what happened.

``run_once()`` is one deterministic round (tests drive it); ``run(stop)`` repeats rounds until
stopped, woken as soon as a transaction that enqueued something commits.
"""
from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Awaitable
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.crm import outbox
from bot.crm.client import AmoAuthError, AmoBlocked, AmoClient
from bot.crm.compose import Composer
from bot.crm.config import CrmConfig
from bot.crm.conversation import Conversations
from bot.crm.models import LEAD, MERGE, NOTE, TASK
from bot.crm.operations import Operations
from bot.crm.outbox import Clock, Job, Outcome
from bot.crm.state import SyncState
from bot.loops import Loop

log = structlog.get_logger(__name__)

PRUNE_EVERY = timedelta(hours=1)


class OutboxWorker:
    def __init__(
        self, db: async_sessionmaker[AsyncSession], client: AmoClient, state: SyncState, config: CrmConfig,
        composer: Composer, clock: Clock, wakeup: asyncio.Event | None = None, conversations: Conversations | None = None,
        chat_wakeup: asyncio.Event | None = None,
    ) -> None:
        self.db = db
        self.conversations = conversations  # the amoCRM chat (when the channel is on)
        self.chat_wakeup = chat_wakeup or asyncio.Event()
        self.client = client
        self.state = state
        self.config = config
        self.composer = composer
        self.clock = clock
        self.wakeup = wakeup or asyncio.Event()
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._pruned_at: datetime | None = None

    async def run_once(self) -> int:
        """One round; returns how many items it claimed (0: nothing to do now, or the sync waits)."""
        tuning = self.config.outbox
        recovered = await outbox.recover(self.db, self.clock(), tuning.lease)
        if recovered:
            log.warning("crm.recovered", items=recovered, note="claimed by a worker that stopped; looking them up before resending")
        account = await self.state.ready()
        if account is None:
            return 0
        jobs = await outbox.claim(self.db, self.id, self.clock(), tuning)
        if not jobs:
            return 0
        outcome = Outcome()

        async def carry_out() -> None:
            operations = Operations(self.db, self.client, self.config, self.composer, account)
            notes = [job for job in jobs if job.op == NOTE]
            await operations.cards([job for job in jobs if job.op == LEAD], outcome)
            await operations.notes(notes, outcome)
            await operations.merges([job for job in jobs if job.op == MERGE], outcome, notes)
            await operations.tasks([job for job in jobs if job.op == TASK], outcome)

        await self._settle(jobs, outcome, carry_out(), "crm.round_failed")
        if any("crm_lead_id" in columns or "crm_contact_id" in columns for columns in outcome.leads.values()):
            self.chat_wakeup.set()  # a buyer's chat items may have waited for their deal: no poll interval's wait
        log.info("crm.round", claimed=len(jobs), done=len(outcome.done), failed=len(outcome.failed), retry=len(outcome.retry))
        return len(jobs)

    async def _settle(self, jobs: list[Job], outcome: Outcome, work: Awaitable[None], failure: str) -> None:
        """Run a round's ``work``, then record every job's outcome, whatever happened (undecided jobs are postponed)."""
        try:
            await work
        except (AmoBlocked, AmoAuthError) as exc:
            await self.state.stop(exc)
        except asyncio.CancelledError:
            self._postpone_rest(jobs, outcome, "stopped while sending")
            raise
        except Exception as exc:
            log.exception(failure)
            self._postpone_rest(jobs, outcome, f"internal error: {exc!r}")
        finally:
            await asyncio.shield(outbox.finish(self.db, jobs, outcome, self.clock(), self.config.outbox))

    @staticmethod
    def _postpone_rest(jobs: list[Job], outcome: Outcome, reason: str) -> None:
        for job in jobs:
            if not outcome.decided(job):
                outcome.postpone(job, reason, uncertain=True)

    async def run_chats_once(self) -> int:
        """One round of the amoCRM chat's items (their own loop: a buyer's message never waits behind a REST batch)."""
        if self.conversations is None or await self.state.known() is None:  # (a stopped sync stops here at its next REST call)
            return 0
        scope_id = await self.conversations.scope()
        if scope_id is None:
            return 0
        tuning = self.config.outbox
        jobs = await outbox.claim(self.db, self.id, self.clock(), tuning, chats=True)
        if not jobs:
            return 0
        outcome = Outcome()
        await self._settle(jobs, outcome, self.conversations.send(scope_id, jobs, outcome), "crm.chat_round_failed")
        return len(jobs)

    async def drain(self, max_rounds: int = 1000) -> int:
        """Run rounds (both kinds) until neither claims anything; returns the items claimed in total."""
        total = 0
        for _ in range(max_rounds):
            claimed = await self.run_once() + await self.run_chats_once()
            if not claimed:
                break
            total += claimed
        return total

    async def run_chats(self, stop: asyncio.Event) -> None:
        """The chat's rounds until ``stop``, woken like the others."""
        async def chat_round() -> bool:
            return await self.run_chats_once() > 0

        await Loop("crm.chats", chat_round, every=self.config.outbox.poll, wake=self.chat_wakeup).run(stop)

    async def round(self) -> bool:
        """A round, and the hourly pruning; True if it claimed work (more may be waiting)."""
        claimed = await self.run_once()
        await self._prune()
        return claimed > 0

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds while there is work, then wait for a wake-up or the poll interval; until ``stop``."""
        await Loop("crm.outbox", self.round, every=self.config.outbox.poll, wake=self.wakeup).run(stop)

    async def _prune(self) -> None:
        now = self.clock()
        if self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY:
            self._pruned_at = now
            await outbox.prune(self.db, now - timedelta(days=self.config.outbox.keep_done_days))
