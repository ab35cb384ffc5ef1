"""Carrying out claimed jobs in amoCRM: lead cards, notes and tasks, in batches; merges (``bot/crm/merge.py``).

A job that may already have reached amoCRM (``uncertain``) is looked up by its marker first.
A 400 fails only the items amoCRM names; the rest of the batch is sent again at once.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.crm import cards
from bot.crm.client import AmoClient, AmoRejected, AmoUnavailable
from bot.crm.compose import Composer, has_marker, item_marker, lead_marker
from bot.crm.config import CrmConfig
from bot.crm.discovery import AccountMap
from bot.crm.merge import Merger, buyer_contacts, is_open
from bot.crm.outbox import Job, Outcome
from bot.db.models import Lead
from bot.funnel import STAGES

MAX_LOOKUP_PAGES = 4  # how far back (×250) to look for a note or task that may have been sent


class Call(NamedTuple):
    """A batch endpoint and where its answer lists the created items (None: a bare array)."""

    method: str
    path: str
    entity: str | None


COMPLEX = Call("POST", "/api/v4/leads/complex", None)
PATCH_LEADS = Call("PATCH", "/api/v4/leads", "leads")
ADD_NOTES = Call("POST", "/api/v4/leads/notes", "notes")
ADD_TASKS = Call("POST", "/api/v4/tasks", "tasks")


@dataclass
class Entry:
    """One item of a batch call and the jobs it carries out."""

    body: dict[str, Any]
    jobs: list[Job]


def _by_lead(jobs: Iterable[Job]) -> dict[int, list[Job]]:
    groups: dict[int, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.lead_id, []).append(job)
    return groups


def given(group: list[Job]) -> dict[str, str]:
    """The field values a lead's card jobs carry from their events (the latest wins)."""
    values: dict[str, str] = {}
    for job in group:
        values.update(job.payload.get("fields") or {})
    return values


class Operations:
    def __init__(self, db: async_sessionmaker[AsyncSession], client: AmoClient, config: CrmConfig, composer: Composer, account: AccountMap) -> None:
        self.db = db
        self.client = client
        self.config = config
        self.composer = composer
        self.account = account

    async def _leads(self, lead_ids: Iterable[int]) -> dict[int, Lead]:
        async with self.db() as session:
            rows = await session.scalars(select(Lead).where(Lead.id.in_(set(lead_ids))))
            return {lead.id: lead for lead in rows}

    # ------------------------------------------------------------ batch calls
    async def _send(self, call: Call, entries: list[Entry], outcome: Outcome) -> list[tuple[dict[str, Any], Entry]]:
        """Send ``entries`` as one batch; returns (amoCRM's item, entry) for the accepted ones."""
        if not entries:
            return []
        try:
            response = await self.client.request(call.method, call.path, body=[entry.body for entry in entries])
        except AmoUnavailable as exc:
            for entry in entries:
                for job in entry.jobs:
                    outcome.postpone(job, str(exc), uncertain=exc.uncertain)
            return []
        except AmoRejected as exc:
            return await self._rejected(call, entries, exc, outcome)
        items = response if call.entity is None else response["_embedded"][call.entity]
        by_request = {entry.body["request_id"]: entry for entry in entries}
        accepted = []
        for index, item in enumerate(items):
            request_id = item.get("request_id")
            request_id = request_id[0] if isinstance(request_id, list) else request_id
            accepted.append((item, by_request.get(str(request_id), entries[index])))
        return accepted

    async def _rejected(self, call: Call, entries: list[Entry], exc: AmoRejected, outcome: Outcome) -> list[tuple[dict[str, Any], Entry]]:
        """Fail the items amoCRM named and send the others again; without names, find the culprits one by one."""
        named: dict[int, str] = {}
        for key, reason in exc.errors.items():
            index = next((i for i, e in enumerate(entries) if e.body["request_id"] == key), None)
            if index is None and key.isdigit() and int(key) < len(entries):
                index = int(key)
            if index is not None:
                named[index] = reason
        if not named and len(entries) > 1:
            accepted = []
            for entry in entries:
                accepted += await self._send(call, [entry], outcome)
            return accepted
        if not named:
            named = {0: exc.detail}
        for index, reason in named.items():
            for job in entries[index].jobs:
                outcome.fail(job, reason)
        rest = [entry for i, entry in enumerate(entries) if i not in named]
        return await self._send(call, rest, outcome)

    # ------------------------------------------------------------- lead cards
    async def cards(self, jobs: list[Job], outcome: Outcome) -> None:
        """Create or update each lead's card (several card jobs of a lead are one change)."""
        groups = _by_lead(jobs)
        leads = await self._leads(groups)
        creates: list[tuple[Lead, list[Job]]] = []
        updates: list[tuple[Lead, list[Job]]] = []
        for lead_id, group in groups.items():
            lead = leads.get(lead_id)
            if lead is None or lead.merged_into_id is not None:
                for job in group:
                    outcome.succeed(job, skipped="lead merged or deleted")
            else:
                (updates if lead.crm_lead_id else creates).append((lead, group))
        to_create = []
        try:
            for lead, group in creates:
                if await self._adopt_existing(lead, group, outcome):
                    updates.append((lead, group))
                else:
                    to_create.append((lead, group))
        except AmoUnavailable as exc:
            for job in jobs:
                if not outcome.decided(job):
                    outcome.postpone(job, str(exc), uncertain=False)
            return
        await self._create(to_create, outcome)
        await self._update(updates, outcome)

    def _target(self, group: list[Job]) -> tuple[str | None, bool]:
        """The stage to move to, and whether a manager chose it (the latest choice wins, in any direction)."""
        chosen = [job.payload["stage"] for job in group if job.payload.get("chosen") and job.payload.get("stage") in self.account.stages]
        if chosen:
            return chosen[-1], True
        stages = [job.payload.get("stage") for job in group if job.payload.get("stage") in self.account.stages]
        return (max(stages, key=STAGES.index) if stages else None), False

    def _remember(self, lead: Lead, outcome: Outcome, **columns: Any) -> None:
        for name, value in columns.items():
            setattr(lead, name, value)
        outcome.leads.setdefault(lead.id, {}).update(columns)

    async def _adopt_existing(self, lead: Lead, group: list[Job], outcome: Outcome) -> bool:
        """A lead amoCRM already has for this buyer: ours sent before a crash, or an open one of the same phone."""
        if any(job.uncertain for job in group):
            body = await self.client.get("/api/v4/leads", {"query": lead_marker(lead.id), "with": "contacts"}) or {}
            for found in body.get("_embedded", {}).get("leads", []):
                if has_marker(found.get("name"), lead_marker(lead.id)):
                    contacts = found.get("_embedded", {}).get("contacts") or [{}]
                    self._remember(lead, outcome, crm_lead_id=found["id"], crm_contact_id=contacts[0].get("id"),
                                   crm_status_id=found["status_id"], crm_pipeline_id=found["pipeline_id"],
                                   responsible_user_id=found.get("responsible_user_id"))
                    return True
        contacts = await buyer_contacts(self.client, lead)
        if not contacts:
            return False
        self._remember(lead, outcome, crm_contact_id=contacts[0]["id"])
        lead_ids = [item["id"] for item in contacts[0].get("_embedded", {}).get("leads", [])]
        if not lead_ids:
            return False
        body = await self.client.get("/api/v4/leads", [("filter[id][]", i) for i in lead_ids]) or {}
        open_leads = [found for found in body.get("_embedded", {}).get("leads", []) if is_open(found, self.account)]
        if not open_leads:
            return False
        found = min(open_leads, key=lambda item: (item["created_at"], item["id"]))  # the earliest: duplicates fold into it
        self._remember(lead, outcome, crm_lead_id=found["id"], crm_status_id=found["status_id"],
                       crm_pipeline_id=found["pipeline_id"], responsible_user_id=found.get("responsible_user_id"))
        return True

    async def _create(self, batch: list[tuple[Lead, list[Job]]], outcome: Outcome) -> None:
        entries = []
        for lead, group in batch:
            stage = self._target(group)[0] or ("new" if "new" in self.account.stages else None)
            body: dict[str, Any] = {"name": self.composer.lead_name(lead), "request_id": str(group[0].id)}
            if stage is not None:
                body["pipeline_id"], body["status_id"] = self.account.stages[stage]
            if self.account.responsible_id:
                body["responsible_user_id"] = self.account.responsible_id
            fields = cards.lead_fields(lead, self.account, self.composer, given(group))
            if fields:
                body["custom_fields_values"] = fields
            if lead.crm_contact_id:
                contacts = [{"id": lead.crm_contact_id}]
            else:  # a contact only for a buyer with a phone or email: found by it later, never a nameless duplicate
                contacts = [cards.new_contact(lead, self.account, self.composer)] if lead.phone or lead.email else []
            body["_embedded"] = {"tags": cards.tags(lead, self.config.tags), "contacts": contacts}
            entries.append((lead, Entry(body, group)))
        leads_by_entry = {id(entry): lead for lead, entry in entries}
        for item, entry in await self._send(COMPLEX, [entry for _, entry in entries], outcome):
            lead = leads_by_entry[id(entry)]
            self._remember(lead, outcome, crm_lead_id=item["id"], crm_contact_id=item.get("contact_id"),
                           crm_pipeline_id=entry.body.get("pipeline_id"), crm_status_id=entry.body.get("status_id"),
                           **({"responsible_user_id": self.account.responsible_id} if self.account.responsible_id else {}))
            for job in entry.jobs:
                outcome.succeed(job, crm_lead_id=item["id"], contact_id=item.get("contact_id"))

    async def _update(self, batch: list[tuple[Lead, list[Job]]], outcome: Outcome) -> None:
        entries = []
        for lead, group in batch:
            body: dict[str, Any] = {"id": lead.crm_lead_id, "request_id": str(group[0].id), "tags_to_add": cards.tags(lead, self.config.tags)}
            fields = cards.lead_fields(lead, self.account, self.composer, given(group))
            if fields:
                body["custom_fields_values"] = fields
            target, chosen = self._target(group)
            if cards.moves_to(lead, target, self.account, chosen=chosen):
                body["pipeline_id"], body["status_id"] = self.account.stages[target]  # type: ignore[index]
            entries.append(Entry(body, group))
        for item, entry in await self._send(PATCH_LEADS, entries, outcome):
            if "status_id" in entry.body:
                lead_id = entry.jobs[0].lead_id
                outcome.leads.setdefault(lead_id, {}).update(crm_status_id=entry.body["status_id"], crm_pipeline_id=entry.body["pipeline_id"])
            for job in entry.jobs:
                outcome.succeed(job, crm_lead_id=item["id"])

    # ------------------------------------------------------------------ notes
    async def notes(self, jobs: list[Job], outcome: Outcome) -> None:
        """All notes of the round in one request, each lead's in order."""
        leads = await self._leads(job.lead_id for job in jobs)
        if not await self._look_up(jobs, leads, "/api/v4/leads/notes", "notes", lambda note: note.get("params", {}).get("text"), outcome):
            return
        entries = [
            Entry({"entity_id": leads[job.lead_id].crm_lead_id, "note_type": "common",
                   "params": {"text": f"{job.payload['text']}\n{item_marker(job.id)}"}, "request_id": str(job.id)}, [job])
            for job in jobs if not outcome.decided(job)
        ]
        for item, entry in await self._send(ADD_NOTES, entries, outcome):
            outcome.succeed(entry.jobs[0], note_id=item["id"])

    # ----------------------------------------------------------------- merges
    async def merges(self, jobs: list[Job], outcome: Outcome, notes: list[Job]) -> None:
        """Each lead's merge, once the notes claimed before it in the round are done (else it waits for them)."""
        leads = await self._leads(job.lead_id for job in jobs)
        merger = Merger(self.db, self.client, self.config, self.composer, self.account)
        for job in jobs:
            if any(note.lead_id == job.lead_id and note.id not in outcome.done and note.id not in outcome.failed for note in notes):
                continue
            try:
                await merger.merge(job, leads[job.lead_id], outcome)
            except AmoUnavailable as exc:
                outcome.postpone(job, str(exc), uncertain=False)
            except AmoRejected as exc:
                outcome.fail(job, next(iter(exc.errors.values()), exc.detail))

    # ------------------------------------------------------------------ tasks
    async def tasks(self, jobs: list[Job], outcome: Outcome) -> None:
        """Tasks for each lead's responsible manager (read from amoCRM when not known yet)."""
        leads = await self._leads(job.lead_id for job in jobs)
        if not await self._look_up(jobs, leads, "/api/v4/tasks", "tasks", lambda task: task.get("text"), outcome):
            return
        try:
            await self._responsibles([lead for lead in leads.values() if lead.responsible_user_id is None and lead.crm_lead_id], outcome)
        except AmoUnavailable as exc:
            for job in jobs:
                if not outcome.decided(job):
                    outcome.postpone(job, str(exc), uncertain=False)
            return
        entries = []
        for job in jobs:
            if outcome.decided(job):
                continue
            lead = leads[job.lead_id]
            body = {"text": f"{job.payload['text']} {item_marker(job.id)}", "complete_till": job.payload["due"], "task_type_id": 1,
                    "entity_id": lead.crm_lead_id, "entity_type": "leads", "request_id": str(job.id)}
            responsible = job.payload.get("responsible_user_id") or lead.responsible_user_id or self.account.responsible_id
            if responsible:
                body["responsible_user_id"] = responsible
            entries.append(Entry(body, [job]))
        for item, entry in await self._send(ADD_TASKS, entries, outcome):
            outcome.succeed(entry.jobs[0], task_id=item["id"])

    async def _responsibles(self, leads: list[Lead], outcome: Outcome) -> None:
        if not leads:
            return
        by_crm = {lead.crm_lead_id: lead for lead in leads}
        async for found in self.client.pages("/api/v4/leads", "leads", [("filter[id][]", crm_id) for crm_id in by_crm]):
            lead = by_crm.get(found["id"])
            if lead is not None and found.get("responsible_user_id"):
                self._remember(lead, outcome, responsible_user_id=found["responsible_user_id"])

    # ----------------------------------------------------------------- lookup
    async def _look_up(self, jobs: list[Job], leads: dict[int, Lead], path: str, entity: str, text_of: Any, outcome: Outcome) -> bool:
        """Mark done the uncertain jobs amoCRM already has (found by marker); False if amoCRM could not be asked."""
        doubtful = {item_marker(job.id): job for job in jobs if job.uncertain}
        if not doubtful:
            return True
        crm_ids = sorted({leads[job.lead_id].crm_lead_id for job in doubtful.values()})
        params = [("filter[entity_type]", "leads"), *[("filter[entity_id][]", crm_id) for crm_id in crm_ids], ("order[id]", "desc")]
        try:
            async for found in self.client.pages(path, entity, params, max_pages=MAX_LOOKUP_PAGES):
                text = text_of(found) or ""
                marker = next((m for m in doubtful if has_marker(text, m)), None)
                if marker is not None:
                    outcome.succeed(doubtful.pop(marker), **{f"{entity[:-1]}_id": found["id"], "reconciled": True})
                if not doubtful:
                    break
        except AmoUnavailable as exc:
            for job in jobs:
                if not outcome.decided(job):
                    outcome.postpone(job, str(exc), uncertain=False)
            return False
        return True
