"""The outbox: journal records become CRM operations in the same transaction; every query of ``crm_outbox``.

Ordering rules the claim enforces per lead: nothing but the lead card goes before amoCRM knows
the lead; card updates never overlap; notes go strictly in order (a note waits while an
earlier one is sending or waiting to retry); tasks are independent. A merge (the buyer's
duplicate deals folded into one) takes its place among the notes: it waits for the notes before
it, the notes after it wait for it, and the lead's card updates and tasks wait while it is queued.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any

import structlog
from sqlalchemy import delete, event, exists, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from bot.crm import store
from bot.crm.compose import Composer
from bot.crm.config import CHOSEN_STAGE, CrmConfig, EventRule, OutboxTuning
from bot.crm.models import CHAT, DONE, FAILED, LEAD, MERGE, NOTE, PENDING, READY, RETRY, SENDING, TASK, UNFINISHED, OutboxItem
from bot.db.models import Lead, Message
from bot.hours import ALWAYS, WorkingHours
from bot.journal import LEAD_MERGED, Record

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Job:
    """A claimed outbox item, detached from the session."""

    id: int
    lead_id: int
    op: str
    key: str | None
    payload: dict[str, Any]
    attempts: int
    uncertain: bool


@dataclass
class Outcome:
    """What became of a round's jobs (undecided jobs go back to the queue untouched)."""

    done: dict[int, dict[str, Any]] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    retry: dict[int, tuple[Job, str, bool]] = field(default_factory=dict)
    leads: dict[int, dict[str, Any]] = field(default_factory=dict)  # local lead id → columns to set

    def decided(self, job: Job) -> bool:
        return job.id in self.done or job.id in self.failed or job.id in self.retry

    def succeed(self, job: Job, **result: Any) -> None:
        self.done[job.id] = result

    def fail(self, job: Job, reason: str) -> None:
        self.failed[job.id] = reason

    def postpone(self, job: Job, error: str, *, uncertain: bool) -> None:
        self.retry[job.id] = (job, error, job.uncertain or uncertain)


# --------------------------------------------------------------------- writing
class OutboxWriter:
    """The journal subscriber: one event or message → the outbox items the configuration asks for."""

    def __init__(self, config: CrmConfig, composer: Composer, clock: Clock, wake: Callable[[bool], None] | None = None,
                 hours: WorkingHours = ALWAYS, *, message_notes: bool = True,
                 chat: Callable[[Lead, Message], list[tuple[str, str, dict[str, Any]]]] | None = None) -> None:
        self.config = config
        self.chat = chat  # the amoCRM chat's items of a message (bot/crm/conversation.py), when the channel is on
        self.message_notes = message_notes  # off: the conversation reaches amoCRM as its chat, not as notes
        self.composer = composer
        self.clock = clock
        self.wake = wake  # after the commit; True: only chat items were queued (the REST round need not look)
        self.hours = hours  # a task's deadline starts at the next opening

    async def __call__(self, session: AsyncSession, lead: Lead, record: Record) -> None:
        if lead.merged_into_id is not None:
            return
        now = self.clock()
        try:
            items = await self._items(session, lead, record, now)
        except SQLAlchemyError:
            raise
        except Exception:  # a text that cannot be composed must not cost the buyer the bot's answer
            log.exception("crm.compose_failed", lead_id=lead.id, record=type(record).__name__)
            items = [(NOTE, "raw", {"text": str(getattr(record, "text", None) or getattr(record, "kind", "?"))})]
        if not items:
            return
        if lead.crm_lead_id is None and all(op != LEAD for op, _, _ in items) and not await has_unfinished(session, lead.id, LEAD):
            items.insert(0, (LEAD, "sync", {}))
        for op, key, payload in items:
            session.add(OutboxItem(lead_id=lead.id, op=op, key=key, payload=payload, state=PENDING, created_at=now))
        self._wake_after_commit(session, only_chat=all(op == CHAT for op, _, _ in items))

    async def _items(self, session: AsyncSession, lead: Lead, record: Record, now: datetime) -> list[tuple[str, str, dict[str, Any]]]:
        """(op, key, payload) of what the configuration asks for this record."""
        if isinstance(record, Message):
            notes = [(NOTE, "message", {"text": self.composer.message_note(record)})] if self.message_notes else []
            return notes + (self.chat(lead, record) if self.chat else [])
        merged = record.kind == LEAD_MERGED
        if merged:
            await adopt(session, record.data["from_lead_id"], lead.id)
        rule = self.config.events.get(record.kind)
        if rule is None and not merged:
            return []
        rule = rule or EventRule()
        items: list[tuple[str, str, dict[str, Any]]] = []
        fields = {key: str(record.data[key]) for key in rule.fields
                  if self.config.lead_fields.get(key) and record.data.get(key) not in (None, "")}
        if rule.sync or rule.stage or fields:
            chosen = rule.stage == CHOSEN_STAGE
            stage = record.data.get("stage") if chosen else rule.stage
            items.append((LEAD, record.kind, {"stage": stage, "chosen": chosen, **({"fields": fields} if fields else {})}))
        if rule.contact or merged:  # the buyer is known now: one contact, one deal in amoCRM
            deals = [record.data["from_crm_lead_id"]] if merged and record.data.get("from_crm_lead_id") else []
            if not await extend_merge(session, lead.id, deals):
                items.append((MERGE, record.kind, {"deals": deals}))
        if rule.note:
            items.append((NOTE, rule.note, {"text": self.composer.event_note(rule.note, lead, record.data)}))
        if rule.task:
            minutes = self.config.tasks[rule.task]
            assignee = record.data.get("responsible_user_id")  # an event aimed at one person (an SLA escalation)
            key = f"{rule.task}@{assignee}" if assignee else rule.task  # one open task of a kind per person
            if not await recent_task(session, lead.id, key, now - timedelta(minutes=minutes)):
                text = self.composer.task(rule.task, lead, record.data)
                payload = {"text": text, "due": int(self.hours.deadline(now, minutes).timestamp()), "responsible_user_id": assignee}
                items.append((TASK, key, payload))
        return items

    def _wake_after_commit(self, session: AsyncSession, *, only_chat: bool) -> None:
        if self.wake is None:
            return
        waking = session.info.get("crm_wake")
        if waking is not None:  # one wake-up per transaction, for everything it queued
            waking["only_chat"] &= only_chat
            return
        waking = session.info["crm_wake"] = {"only_chat": only_chat}

        def fire(_: object) -> None:
            session.info.pop("crm_wake", None)
            self.wake(waking["only_chat"])  # type: ignore[misc]

        event.listen(session.sync_session, "after_commit", fire, once=True)


def add_task(session: AsyncSession, lead_id: int, kind: str, text: str, due: datetime, now: datetime) -> None:
    session.add(OutboxItem(lead_id=lead_id, op=TASK, key=kind, payload={"text": text, "due": int(due.timestamp())},
                           state=PENDING, created_at=now))


async def has_unfinished(session: AsyncSession, lead_id: int, op: str) -> bool:
    query = select(exists().where(OutboxItem.lead_id == lead_id, OutboxItem.op == op, OutboxItem.state.in_(UNFINISHED)))
    return bool(await session.scalar(query))


async def recent_task(session: AsyncSession, lead_id: int, kind: str, since: datetime) -> bool:
    """A task of this kind for the lead was queued since ``since`` (and not refused)."""
    query = select(exists().where(
        OutboxItem.lead_id == lead_id, OutboxItem.op == TASK, OutboxItem.key == kind,
        OutboxItem.created_at >= since, OutboxItem.state != FAILED,
    ))
    return bool(await session.scalar(query))


async def leads_with_unfinished_tasks(session: AsyncSession, lead_ids: list[int]) -> set[int]:
    query = select(OutboxItem.lead_id).where(OutboxItem.lead_id.in_(lead_ids), OutboxItem.op == TASK, OutboxItem.state.in_(UNFINISHED))
    return set((await session.scalars(query)).all())


async def adopt(session: AsyncSession, from_lead_id: int, to_lead_id: int) -> None:
    """A merged lead's queued items now belong to the survivor (they keep their place in line)."""
    await session.execute(
        update(OutboxItem).where(OutboxItem.lead_id == from_lead_id, OutboxItem.state.in_(READY)).values(lead_id=to_lead_id)
    )


async def extend_merge(session: AsyncSession, lead_id: int, deals: list[int]) -> bool:
    """Add ``deals`` to the lead's merge that has not started yet; False if there is none."""
    query = select(OutboxItem).where(OutboxItem.lead_id == lead_id, OutboxItem.op == MERGE, OutboxItem.state == PENDING)
    item = (await session.scalars(query.limit(1))).first()
    if item is None:
        return False
    item.payload = {**item.payload, "deals": sorted({*item.payload.get("deals", []), *deals})}
    return True


async def switch_deal(db: async_sessionmaker[AsyncSession], lead_id: int, columns: dict[str, Any], job: Job, deals: list[int]) -> None:
    """Point the lead at the deal a merge keeps, and remember the deals it folds in (a repeated merge finds them)."""
    async with db.begin() as session:
        await session.execute(update(Lead).where(Lead.id == lead_id).values(**columns))
        payload = {**job.payload, "deals": sorted({*job.payload.get("deals", []), *deals})}
        await session.execute(update(OutboxItem).where(OutboxItem.id == job.id).values(payload=payload))


# -------------------------------------------------------------------- claiming
def plan(items: list[OutboxItem], crm_ids: dict[int, int | None], now: datetime, tuning: OutboxTuning, *,
         chats: bool = False) -> list[OutboxItem]:
    """Choose what to send now from each lead's unfinished items (in id order), within the batch sizes.

    With ``chats`` only the ``chat`` items (the amoCRM chat's own round): strictly in order per lead, once amoCRM
    knows the lead; without, everything else.
    """
    def ready(item: OutboxItem) -> bool:
        return item.state in READY and (item.next_attempt_at is None or item.next_attempt_at <= now)

    chosen: list[OutboxItem] = []
    leads_left, notes_left, tasks_left, chats_left = tuning.lead_batch, tuning.note_batch, tuning.task_batch, tuning.note_batch
    for lead_id, group in groupby(items, key=lambda item: item.lead_id):
        own = list(group)
        known = crm_ids.get(lead_id) is not None
        merging = known and any(item.op == MERGE for item in own)  # the deal may change: cards and tasks wait
        cards = [item for item in own if item.op == LEAD]
        if cards and not chats and leads_left and not merging and all(ready(item) for item in cards):
            chosen += cards
            leads_left -= 1
        if chats:
            for item in (item for item in own if item.op == CHAT and known):
                if not ready(item) or not chats_left:
                    break
                chosen.append(item)
                chats_left -= 1
            continue
        if not known:
            continue
        for item in (item for item in own if item.op in (NOTE, MERGE)):
            if not ready(item) or not notes_left:
                break
            if item.op == MERGE:  # after the notes before it, alone with the deal: no card or task in flight
                if not any(other.state == SENDING and other.op in (LEAD, TASK) for other in own):
                    chosen.append(item)
                break
            chosen.append(item)
            notes_left -= 1
        if merging:
            continue
        for item in (item for item in own if item.op == TASK and ready(item)):
            if not tasks_left:
                break
            chosen.append(item)
            tasks_left -= 1
    return chosen


async def claim(db: async_sessionmaker[AsyncSession], worker: str, now: datetime, tuning: OutboxTuning, *,
                chats: bool = False) -> list[Job]:
    """Mark a round's items ``sending`` for ``worker``; one claimer at a time across instances (``chats``: the chat's round, see :func:`plan`)."""
    async with db.begin() as session:
        await store.lock(session, store.CHAT_CLAIM if chats else store.CLAIM)  # the two rounds claim disjoint items
        due = or_(OutboxItem.next_attempt_at.is_(None), OutboxItem.next_attempt_at <= now)
        heads = (
            select(OutboxItem.lead_id).join(Lead, Lead.id == OutboxItem.lead_id)
            .where(OutboxItem.state.in_(READY), due, or_(OutboxItem.op == LEAD, Lead.crm_lead_id.is_not(None)),
                   (OutboxItem.op == CHAT) if chats else (OutboxItem.op != CHAT))
            .group_by(OutboxItem.lead_id).order_by(func.min(OutboxItem.id)).limit(tuning.note_batch)
        )
        lead_ids = list((await session.scalars(heads)).all())
        if not lead_ids:
            return []
        ranked = (
            select(OutboxItem, func.row_number().over(partition_by=OutboxItem.lead_id, order_by=OutboxItem.id).label("n"))
            .where(OutboxItem.lead_id.in_(lead_ids), OutboxItem.state.in_(UNFINISHED))
            .subquery()
        )
        row = aliased(OutboxItem, ranked)
        items = list((await session.scalars(select(row).where(ranked.c.n <= tuning.note_batch).order_by(ranked.c.lead_id, ranked.c.id))).all())
        crm_ids = {row.id: row.crm_lead_id for row in await session.execute(select(Lead.id, Lead.crm_lead_id).where(Lead.id.in_(lead_ids)))}
        chosen = plan(items, crm_ids, now, tuning, chats=chats)
        if chosen:
            await session.execute(
                update(OutboxItem).where(OutboxItem.id.in_([item.id for item in chosen]))
                .values(state=SENDING, claimed_by=worker, claimed_at=now)
            )
        return [Job(i.id, i.lead_id, i.op, i.key, dict(i.payload), i.attempts, i.uncertain) for i in chosen]


async def recover(db: async_sessionmaker[AsyncSession], now: datetime, lease: float) -> int:
    """Items left ``sending`` past the lease (their worker died) may have reached amoCRM: reconcile them."""
    stale = (OutboxItem.state == SENDING) & (OutboxItem.claimed_at < now - timedelta(seconds=lease))
    async with db() as session:  # a read first: every round looks, and only a worker that died needs the write lock
        if not await session.scalar(select(exists().where(stale))):
            return 0
    async with db.begin() as session:
        result = await session.execute(
            update(OutboxItem)
            .where(stale)
            .values(state=RETRY, uncertain=True, next_attempt_at=now, claimed_by=None,
                    last_error="the worker stopped while sending; will look it up in amoCRM first")
        )
        return result.rowcount or 0


def backoff(tuning: OutboxTuning, attempts: int) -> timedelta:
    return timedelta(seconds=min(tuning.backoff * 2 ** max(attempts - 1, 0), tuning.backoff_max))


async def finish(db: async_sessionmaker[AsyncSession], jobs: list[Job], outcome: Outcome, now: datetime, tuning: OutboxTuning) -> None:
    """Record a round: done, failed, retrying; undecided jobs go back to ``pending``; lead columns are set."""
    rows: list[dict[str, Any]] = []
    for job in jobs:
        if job.id in outcome.done:
            rows.append({"id": job.id, "state": DONE, "result": outcome.done[job.id], "done_at": now, "uncertain": False, "last_error": None})
        elif job.id in outcome.failed:
            rows.append({"id": job.id, "state": FAILED, "last_error": outcome.failed[job.id], "uncertain": False, "done_at": now})
        elif job.id in outcome.retry:
            _, error, uncertain = outcome.retry[job.id]
            rows.append({"id": job.id, "state": RETRY, "attempts": job.attempts + 1, "last_error": error, "uncertain": uncertain,
                         "next_attempt_at": now + backoff(tuning, job.attempts + 1)})
        else:
            rows.append({"id": job.id, "state": PENDING})
    async with db.begin() as session:
        if rows:
            await session.execute(update(OutboxItem), [{"claimed_by": None, **row} for row in rows])
        for lead_id, columns in outcome.leads.items():
            lead = await session.get(Lead, lead_id)
            if lead is None:
                continue
            if lead.merged_into_id is not None:  # merged while its card was being created: the survivor folds that deal in
                deals = [columns["crm_lead_id"]] if columns.get("crm_lead_id") else []
                if deals and not await extend_merge(session, lead.merged_into_id, deals):
                    session.add(OutboxItem(lead_id=lead.merged_into_id, op=MERGE, key=LEAD_MERGED, payload={"deals": deals},
                                           state=PENDING, created_at=now))
                continue
            for name, value in columns.items():
                setattr(lead, name, value)
        merged = await session.execute(select(Lead.id, Lead.merged_into_id).where(
            Lead.id.in_({job.lead_id for job in jobs}), Lead.merged_into_id.is_not(None)))
        for lead_id, survivor_id in merged.all():  # what was in flight at the merge goes on with the survivor
            await adopt(session, lead_id, survivor_id)


# -------------------------------------------------------------------- operator
async def counts(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(OutboxItem.state, func.count()).group_by(OutboxItem.state))
    return dict(rows.all())


async def listing(session: AsyncSession, states: tuple[str, ...], limit: int = 20) -> list[OutboxItem]:
    query = select(OutboxItem).where(OutboxItem.state.in_(states)).order_by(OutboxItem.id).limit(limit)
    return list((await session.scalars(query)).all())


async def oldest_pending(session: AsyncSession) -> datetime | None:
    return await session.scalar(select(func.min(OutboxItem.created_at)).where(OutboxItem.state.in_(UNFINISHED)))


async def requeue_failed(session: AsyncSession, ids: list[int] | None = None) -> int:
    """Failed items back to ``pending`` (all of them, or those ``ids``)."""
    query = update(OutboxItem).where(OutboxItem.state == FAILED)
    if ids:
        query = query.where(OutboxItem.id.in_(ids))
    result = await session.execute(query.values(state=PENDING, attempts=0, next_attempt_at=None, last_error=None, done_at=None))
    return result.rowcount or 0


async def prune(db: async_sessionmaker[AsyncSession], before: datetime) -> int:
    async with db.begin() as session:
        result = await session.execute(delete(OutboxItem).where(OutboxItem.state == DONE, OutboxItem.done_at < before))
        return result.rowcount or 0
