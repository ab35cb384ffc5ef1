"""Inbound amoCRM: form-encoded webhooks (and the periodic reconcile) move the local lead.

amoCRM does not sign webhooks: the URL carries WEBHOOK_SECRET (checked by ``bot.web``) and
``account[subdomain]`` must be ours when the base URL names one.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import structlog
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import bodies
from bot.bodies import BadBody
from bot.crm.discovery import AccountMap
from bot.db import leads
from bot.journal import CRM_STAGE_CHANGED, Journal
from bot.web import Handler, error

log = structlog.get_logger(__name__)

LEAD_ACTIONS = ("add", "update", "status", "responsible", "restore")


@dataclass(frozen=True)
class LeadChange:
    crm_lead_id: int
    status_id: int | None = None
    pipeline_id: int | None = None
    responsible_user_id: int | None = None
    price: int | None = None  # the deal's budget
    fields: dict[str, str] = field(default_factory=dict)  # the deal's custom field values by field name (first value)


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


def parse_changes(form: dict[str, Any]) -> list[LeadChange]:
    """``leads[status|update|add|responsible|restore][i][…]`` items as lead changes; :class:`BadBody` if malformed."""
    found = form.get("leads") or {}
    if not isinstance(found, dict):
        raise BadBody("leads must be a list of changes by action (leads[status][0][id]=…)")
    changes = []
    for action in LEAD_ACTIONS:
        items = found.get(action) or []
        if not isinstance(items, list):
            raise BadBody(f"leads[{action}] must be a list (leads[{action}][0][id]=…)")
        for index, item in enumerate(items):
            where = f"leads[{action}][{index}]"
            if not isinstance(item, dict):
                raise BadBody(f"{where} must be an object with an id")
            crm_id = _id(item, "id", where)
            if crm_id is not None:
                changes.append(LeadChange(crm_id, _id(item, "status_id", where), _id(item, "pipeline_id", where),
                                          _id(item, "responsible_user_id", where), _price(item, where), _fields(item, where)))
    return changes


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
) -> Handler:
    """``POST /webhooks/amocrm/{secret}``: answer at once; a 503 makes amoCRM try again later."""
    ours = subdomain_of(base_url)

    async def handle(request: web.Request) -> web.Response:
        try:
            form = (await bodies.read(request, accept=(bodies.FORM,))).data
            changes = parse_changes(form)
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
        log.info("amocrm.webhook", changes=len(changes), moved=moved)
        return web.json_response({"ok": True, "changes": len(changes), "moved": moved})

    return handle
