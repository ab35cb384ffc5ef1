"""Inbound amoCRM: form-encoded webhooks (and the periodic reconcile) move the local lead.

amoCRM does not sign webhooks: the URL carries WEBHOOK_SECRET (checked by ``bot.web``) and
``account[subdomain]`` must be ours when the base URL names one.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import structlog
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import bodies
from bot.bodies import BadBody
from bot.crm import store
from bot.crm.discovery import AccountMap
from bot.db import leads
from bot.journal import CRM_STAGE_CHANGED, CRM_TASK_CHANGED, TASK_COMPLETED, TASK_DELETED, TASK_OPEN, Journal
from bot.web import Handler, error

log = structlog.get_logger(__name__)

LEAD_ACTIONS = ("add", "update", "status", "responsible", "restore")
TASK_ACTIONS = ("add", "update", "delete")
LEAD_ELEMENT = "2"  # a task's element_type when it is set on a lead


@dataclass(frozen=True)
class LeadChange:
    crm_lead_id: int
    status_id: int | None = None
    pipeline_id: int | None = None
    responsible_user_id: int | None = None
    price: int | None = None  # the deal's budget
    fields: dict[str, str] = field(default_factory=dict)  # the deal's custom field values by field name (first value)


@dataclass(frozen=True)
class TaskChange:
    """A task on a deal, as amoCRM reports it (a webhook) or as the API lists it (reconcile)."""

    crm_task_id: int
    crm_lead_id: int
    task_type_id: int | None
    text: str
    complete_till: int | None  # unix time
    state: str  # TASK_OPEN, TASK_COMPLETED or TASK_DELETED


MAX_ID = 2**63 - 1  # amoCRM ids are 64-bit at most (the database columns too)


def _id(item: dict[str, Any], name: str, where: str) -> int | None:
    """An amoCRM id field of ``item`` (absent or empty: None); anything but a positive 64-bit integer is :class:`BadBody`."""
    value = item.get(name)
    if value in (None, ""):
        return None
    if not (isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 20 and 0 < int(value) <= MAX_ID):
        raise BadBody(f"{where}[{name}] must be an amoCRM id (a positive 64-bit integer), got {str(value)[:40]!r}")
    return int(value)


def _price(item: dict[str, Any], where: str) -> int | None:
    """The deal's budget (whole roubles; absent or empty: None); anything but a whole number is :class:`BadBody`."""
    value = item.get("price")
    if value in (None, ""):
        return None
    if not (isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19):
        raise BadBody(f"{where}[price] must be a whole number, got {str(value)[:40]!r}")
    return int(value)


def _fields(item: dict[str, Any], where: str) -> dict[str, str]:
    """``custom_fields[i][name|values][j][value]`` → {field name: first value}; a malformed list is :class:`BadBody`."""
    found = item.get("custom_fields") or []
    if not isinstance(found, list) or not all(isinstance(f, dict) for f in found):
        raise BadBody(f"{where}[custom_fields] must be a list of fields (custom_fields[0][name]=…)")
    values = {}
    for f in found:
        first = (f.get("values") or [None])[0] if isinstance(f.get("values"), list) else None
        value = first.get("value") if isinstance(first, dict) else first
        if isinstance(f.get("name"), str) and isinstance(value, str):
            values[f["name"]] = value
    return values


def deal_fields(custom_fields_values: list[dict[str, Any]] | None) -> dict[str, str]:
    """API v4 ``custom_fields_values`` → {field name: first value as text}."""
    return {f["field_name"]: str(f["values"][0].get("value")) for f in custom_fields_values or [] if f.get("field_name") and f.get("values")}


def _items(form: dict[str, Any], entity: str, actions: tuple[str, ...]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(action, where, item) of ``entity[action][i][…]``; :class:`BadBody` if malformed."""
    found = form.get(entity) or {}
    if not isinstance(found, dict):
        raise BadBody(f"{entity} must be a list of changes by action ({entity}[{actions[0]}][0][id]=…)")
    for action in actions:
        items = found.get(action) or []
        if not isinstance(items, list):
            raise BadBody(f"{entity}[{action}] must be a list ({entity}[{action}][0][id]=…)")
        for index, item in enumerate(items):
            where = f"{entity}[{action}][{index}]"
            if not isinstance(item, dict):
                raise BadBody(f"{where} must be an object with an id")
            yield action, where, item


def parse_changes(form: dict[str, Any]) -> list[LeadChange]:
    """``leads[status|update|add|responsible|restore][i][…]`` items as lead changes; :class:`BadBody` if malformed."""
    changes = []
    for _, where, item in _items(form, "leads", LEAD_ACTIONS):
        crm_id = _id(item, "id", where)
        if crm_id is not None:
            changes.append(LeadChange(crm_id, _id(item, "status_id", where), _id(item, "pipeline_id", where),
                                      _id(item, "responsible_user_id", where), _price(item, where), _fields(item, where)))
    return changes


def parse_tasks(form: dict[str, Any]) -> list[TaskChange]:
    """``task[add|update|delete][i][…]`` items set on leads (``element_type`` 2) as task changes; :class:`BadBody` if malformed."""
    changes = []
    for action, where, item in _items(form, "task", TASK_ACTIONS):
        task_id, lead_id = _id(item, "id", where), _id(item, "element_id", where)
        if task_id is None or lead_id is None or item.get("element_type") != LEAD_ELEMENT:
            continue
        state = TASK_DELETED if action == "delete" else TASK_COMPLETED if item.get("status") == "1" else TASK_OPEN
        text = item.get("text") if isinstance(item.get("text"), str) else ""
        changes.append(TaskChange(task_id, lead_id, _id(item, "task_type", where), text, _id(item, "complete_till", where), state))
    return changes


async def apply_tasks(db: async_sessionmaker[AsyncSession], journal: Journal, task_type: int | None, changes: list[TaskChange],
                      source: str) -> int:
    """Journal the changes of ``task_type`` tasks (and every deletion: its webhook may not say the type) on the deals we know."""
    journalled = 0
    if task_type is None:
        return 0
    async with db.begin() as session:
        for change in changes:
            if change.task_type_id != task_type and change.state != TASK_DELETED:
                continue
            lead = await leads.by_crm_lead(session, change.crm_lead_id)
            if lead is None:
                continue
            journalled += 1
            await journal.event(session, lead, CRM_TASK_CHANGED, task_id=change.crm_task_id, text=change.text,
                                complete_till=change.complete_till, state=change.state, source=source)
    return journalled


def subdomain_of(base_url: str) -> str | None:
    """``https://shop.amocrm.ru`` → ``shop``; None for an address without one (the sandbox)."""
    host = urlsplit(base_url).hostname or ""
    return host.split(".")[0] if host.count(".") >= 2 and not host.replace(".", "").isdigit() else None


async def apply_changes(
    db: async_sessionmaker[AsyncSession], journal: Journal, account: AccountMap, changes: list[LeadChange], source: str,
) -> int:
    """Set the local stage, status, responsible and deal budget of the leads we know; returns how many changed stage."""
    moved = 0
    async with db.begin() as session:
        await store.lock(session, store.STAGES)  # one at a time: the same move read by two (instances, a webhook and a reconcile) is recorded once
        for change in changes:
            lead = await leads.by_crm_lead(session, change.crm_lead_id)
            if lead is None:
                continue
            if change.responsible_user_id:
                lead.responsible_user_id = change.responsible_user_id
            if change.price is not None:
                lead.deal_price = change.price
            if change.status_id is None:
                continue
            lead.crm_status_id, lead.crm_pipeline_id = change.status_id, change.pipeline_id or lead.crm_pipeline_id
            stage = account.stage_of(change.status_id, change.pipeline_id)
            if stage is not None and stage != lead.stage:
                previous, lead.stage = lead.stage, stage
                moved += 1
                await journal.event(session, lead, CRM_STAGE_CHANGED, stage=stage, previous=previous,
                                    status_id=change.status_id, pipeline_id=change.pipeline_id, source=source, fields=change.fields)
    return moved


def webhook_handler(
    db: async_sessionmaker[AsyncSession], journal: Journal, account: Callable[[], Awaitable[AccountMap | None]], base_url: str,
    task_type: int | None = None,
) -> Handler:
    """``POST /webhooks/amocrm/{secret}``: answer at once; a 503 makes amoCRM try again later."""
    ours = subdomain_of(base_url)

    async def handle(request: web.Request) -> web.Response:
        try:
            form = (await bodies.read(request, accept=(bodies.FORM,))).data
            changes, tasks = parse_changes(form), parse_tasks(form)
        except BadBody as exc:
            log.warning("amocrm.webhook_rejected", reason=str(exc))
            return error(exc.status, str(exc))
        theirs = (form.get("account") or {}).get("subdomain") if isinstance(form.get("account"), dict) else None
        if ours and theirs and theirs != ours:
            log.warning("amocrm.webhook_foreign_account", subdomain=theirs)
            return web.json_response({"ok": True, "ignored": "another account"})
        mapping = await account()
        if mapping is None:
            return error(503, "amoCRM sync is not ready")
        moved = await apply_changes(db, journal, mapping, changes, "webhook")
        reminders = await apply_tasks(db, journal, task_type, tasks, "webhook")
        log.info("amocrm.webhook", changes=len(changes), moved=moved, tasks=len(tasks), reminders=reminders)
        return web.json_response({"ok": True, "changes": len(changes), "moved": moved, "tasks": len(tasks)})

    return handle
