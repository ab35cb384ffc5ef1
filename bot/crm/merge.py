"""One buyer, one deal: when the buyer becomes known (a shared phone, two local leads merged), the ``merge`` job
finds their amoCRM contact and folds their duplicate deals into one.

* It keeps one open deal of the configured pipelines: the one the bot works on if a manager made it, else
  the earliest open one (the website quiz's, or a manager's). The lead moves to it.
* The other open deals the bot created (name ending ``#L<id>``) have their notes copied to the kept deal, in
  order and each once, their open tasks moved, and are closed as lost with the configured loss reason; a note
  on both sides links them. A manager's deals are never closed, and a closed deal keeps its history.
* The buyer's contact on the kept deal is the one with their phone (or email), else the deal's own, else a new one.
  The buyer's amoCRM chat (the Chats API channel) moves to it, so it shows on the kept deal.

Every step reads amoCRM's state first, so a merge repeated after a crash does nothing twice; the local lead
points at the kept deal before anything is closed, so a webhook about the closed deal never finds the buyer.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.crm import cards, chats
from bot.crm.client import AmoClient
from bot.crm.compose import Composer, is_bot_lead, item_marker
from bot.crm.config import CrmConfig
from bot.crm.discovery import LOST, WON, AccountMap
from bot.crm.outbox import Job, Outcome, switch_deal
from bot.db.models import Lead

BATCH = 250
_MARKER = re.compile(r"#(?:ob|nt)\d+\s*$")  # ours (outbox item) or a copied note's (amoCRM note id)

Deal = dict[str, Any]


def _trailing_marker(text: str) -> str | None:
    found = _MARKER.search(text)
    return found.group(0).strip() if found else None


def _chunks(items: list[Any]) -> Iterable[list[Any]]:
    return (items[start:start + BATCH] for start in range(0, len(items), BATCH))


def is_open(deal: Deal, account: AccountMap) -> bool:
    """An open deal of one of the configured pipelines."""
    pipelines = {pipeline_id for pipeline_id, _ in account.stages.values()}
    return deal["pipeline_id"] in pipelines and deal["status_id"] not in (WON, LOST)


async def buyer_contacts(client: AmoClient, lead: Lead) -> list[dict[str, Any]]:
    """The amoCRM contacts with the lead's phone (or email), with their deals, oldest first."""
    query = cards.contact_query(lead)
    if not query:
        return []
    body = await client.get("/api/v4/contacts", {"query": query, "with": "leads"}) or {}
    return sorted((c for c in body.get("_embedded", {}).get("contacts", []) if cards.is_buyer(c, lead)), key=lambda c: c["id"])


@dataclass(frozen=True)
class Merger:
    db: async_sessionmaker[AsyncSession]
    client: AmoClient
    config: CrmConfig
    composer: Composer
    account: AccountMap

    async def merge(self, job: Job, lead: Lead, outcome: Outcome) -> None:
        """Carry out one merge job for ``lead`` (its deal is known); amoCRM errors propagate to the caller."""
        contacts = await buyer_contacts(self.client, lead)
        linked = (deal["id"] for contact in contacts for deal in contact.get("_embedded", {}).get("leads", []))
        deals = await self._deals({lead.crm_lead_id, *job.payload.get("deals", []), *linked})
        current = deals.get(lead.crm_lead_id or 0)
        open_deals = [deal for deal in deals.values() if is_open(deal, self.account)]
        if current is not None and is_open(current, self.account) and not is_bot_lead(current.get("name")):
            keeper: Deal | None = current  # a manager's deal the bot already works on
        else:
            keeper = min(open_deals, key=lambda deal: (deal["created_at"], deal["id"]), default=current)
        if keeper is None:
            outcome.succeed(job, skipped="the deal is gone from amoCRM")
            return
        closing = [deal for deal in open_deals if deal is not keeper and is_bot_lead(deal.get("name"))]
        contact_id = await self._contact(lead, keeper, contacts)
        if closing:
            markers = await self._copy_notes(closing, keeper, item_marker(job.id))
            await self._link_notes(job, keeper, closing, markers)
            await self._move_tasks(closing, keeper)
        columns = {"crm_lead_id": keeper["id"], "crm_status_id": keeper["status_id"], "crm_pipeline_id": keeper["pipeline_id"],
                   "crm_contact_id": contact_id, "responsible_user_id": keeper.get("responsible_user_id") or lead.responsible_user_id}
        await switch_deal(self.db, lead.id, columns, job, [deal["id"] for deal in closing])
        await self._move_chat(lead.id, contact_id)
        switching = keeper is not current
        for name, value in columns.items():
            setattr(lead, name, value)
        changes = [self._card(lead, keeper, columns)] if switching else []
        changes += [{"id": deal["id"], "pipeline_id": deal["pipeline_id"], "status_id": LOST,
                     **({"loss_reason_id": self.account.loss_reason_id} if self.account.loss_reason_id else {})} for deal in closing]
        if changes:
            await self.client.patch("/api/v4/leads", changes)
        outcome.leads.setdefault(lead.id, {}).update(columns)
        outcome.succeed(job, kept=keeper["id"], closed=[deal["id"] for deal in closing], contact_id=contact_id)

    async def _deals(self, ids: set[int | None]) -> dict[int, Deal]:
        params = [("with", "contacts"), *[("filter[id][]", deal_id) for deal_id in sorted(i for i in ids if i)]]
        return {deal["id"]: deal async for deal in self.client.pages("/api/v4/leads", "leads", params)}

    async def _contact(self, lead: Lead, keeper: Deal, found: list[dict[str, Any]]) -> int | None:
        """The buyer's contact on the kept deal (found by phone, the deal's own, the lead's, or a new one)."""
        linked = [contact["id"] for contact in keeper.get("_embedded", {}).get("contacts", [])]
        contact = next((c for c in found if c["id"] in linked), found[0] if found else None)
        known = linked[0] if linked else lead.crm_contact_id
        if contact is None and known is not None:
            contact = await self.client.get(f"/api/v4/contacts/{known}")
        if contact is None:
            if not (lead.phone or lead.email):
                return None
            body = await self.client.post("/api/v4/contacts", [cards.new_contact(lead, self.account, self.composer)])
            contact_id = body["_embedded"]["contacts"][0]["id"]
        else:
            contact_id = contact["id"]
            values = cards.merged_values(contact, lead, self.account)
            if values:
                await self.client.patch("/api/v4/contacts", [{"id": contact_id, "custom_fields_values": values}])
        if contact_id not in linked:
            await self.client.post(f"/api/v4/leads/{keeper['id']}/link", [{"to_entity_id": contact_id, "to_entity_type": "contacts"}])
        return contact_id

    async def _move_chat(self, lead_id: int, contact_id: int | None) -> None:
        """The buyer's amoCRM chat linked to the kept contact (a repeat after a crash finds it linked)."""
        async with self.db() as session:
            chat = await chats.of_lead(session, lead_id)
        if chat is None or chat.chat_id is None or contact_id is None or chat.contact_id == contact_id:
            return
        await self.client.post("/api/v4/contacts/chats", [{"chat_id": chat.chat_id, "contact_id": contact_id}])
        async with self.db.begin() as session:
            await chats.save(session, chat.conversation_id, lead_id, contact_id=contact_id)

    async def _notes(self, deal_id: int) -> list[dict[str, Any]]:
        return [note async for note in self.client.pages(f"/api/v4/leads/{deal_id}/notes", "notes", [("order[id]", "asc")])]

    async def _copy_notes(self, closing: list[Deal], keeper: Deal, own: str) -> dict[int, set[str]]:
        """Copy the text notes of ``closing`` to the kept deal, in order, skipping those it has; returns each deal's markers."""
        markers: dict[int, set[str]] = {}
        for deal_id in (keeper["id"], *(deal["id"] for deal in closing)):
            notes = await self._notes(deal_id)
            markers[deal_id] = {m for note in notes if (m := _trailing_marker(str(note.get("params", {}).get("text", ""))))}
            if deal_id == keeper["id"]:
                continue
            copies = []
            for note in notes:
                text = str(note.get("params", {}).get("text") or "")
                marker = _trailing_marker(text)
                if note.get("note_type") != "common" or not text.strip() or marker == own:
                    continue
                if marker is None:
                    marker = f"#nt{note['id']}"
                    text = f"{text}\n{marker}"
                if marker not in markers[keeper["id"]]:
                    markers[keeper["id"]].add(marker)
                    copies.append({"entity_id": keeper["id"], "note_type": "common", "params": {"text": text}})
            for chunk in _chunks(copies):
                await self.client.post("/api/v4/leads/notes", chunk)
        return markers

    async def _link_notes(self, job: Job, keeper: Deal, closing: list[Deal], markers: dict[int, set[str]]) -> None:
        """A note on the kept deal naming the deals folded in, and one on each closed deal naming the kept one."""
        own = item_marker(job.id)
        lines = [self.composer.text("note.merge_line", id=deal["id"], name=deal.get("name")) for deal in closing]
        notes = []
        if own not in markers[keeper["id"]]:
            notes.append((keeper["id"], self.composer.text("note.merge_kept", deals="\n".join(lines))))
        for deal in closing:
            if own not in markers[deal["id"]]:
                notes.append((deal["id"], self.composer.text("note.merge_closed", id=keeper["id"], name=keeper.get("name"))))
        if notes:
            await self.client.post("/api/v4/leads/notes", [
                {"entity_id": deal_id, "note_type": "common", "params": {"text": f"{text}\n{own}"}} for deal_id, text in notes])

    async def _move_tasks(self, closing: list[Deal], keeper: Deal) -> None:
        if not closing:
            return
        params = [("filter[entity_type]", "leads"), ("filter[is_completed]", 0), *[("filter[entity_id][]", deal["id"]) for deal in closing]]
        moves = [{"id": task["id"], "entity_id": keeper["id"], "entity_type": "leads"}
                 async for task in self.client.pages("/api/v4/tasks", "tasks", params)]
        for chunk in _chunks(moves):
            await self.client.patch("/api/v4/tasks", chunk)

    def _card(self, lead: Lead, keeper: Deal, columns: dict[str, Any]) -> dict[str, Any]:
        """The kept deal gets the lead's fields, tags and (forward only) stage."""
        card: dict[str, Any] = {"id": keeper["id"], "tags_to_add": cards.tags(lead, self.config.tags)}
        fields = cards.lead_fields(lead, self.account, self.composer)
        if fields:
            card["custom_fields_values"] = fields
        if lead.stage in self.account.stages and cards.moves_to(lead, lead.stage, self.account):
            pipeline_id, status_id = self.account.stages[lead.stage]
            card.update(pipeline_id=pipeline_id, status_id=status_id)
            columns.update(crm_pipeline_id=pipeline_id, crm_status_id=status_id)
        return card
