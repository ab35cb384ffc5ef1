"""Inbound amoCRM: form-encoded webhooks (and the periodic reconcile) move the local lead.

amoCRM does not sign webhooks: the URL carries WEBHOOK_SECRET (checked by ``bot.web``) and
``account[subdomain]`` must be ours when the base URL names one.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import structlog
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.crm.discovery import AccountMap
from bot.db import leads
from bot.formdata import parse_nested
from bot.journal import CRM_STAGE_CHANGED, Journal

if TYPE_CHECKING:
    from bot.web import Handler

log = structlog.get_logger(__name__)

LEAD_ACTIONS = ("add", "update", "status", "responsible", "restore")


@dataclass(frozen=True)
class LeadChange:
    crm_lead_id: int
    status_id: int | None = None
    pipeline_id: int | None = None
    responsible_user_id: int | None = None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_changes(form: dict[str, Any]) -> list[LeadChange]:
    """``leads[status|update|add|responsible|restore][i][…]`` items as lead changes."""
    changes = []
    for action in LEAD_ACTIONS:
        items = form.get("leads", {}).get(action) or []
        for item in items if isinstance(items, list) else []:
            crm_id = _int(item.get("id")) if isinstance(item, dict) else None
            if crm_id is not None:
                changes.append(LeadChange(crm_id, _int(item.get("status_id")), _int(item.get("pipeline_id")), _int(item.get("responsible_user_id"))))
    return changes


def subdomain_of(base_url: str) -> str | None:
    """``https://shop.amocrm.ru`` → ``shop``; None for an address without one (the sandbox)."""
    host = urlsplit(base_url).hostname or ""
    return host.split(".")[0] if host.count(".") >= 2 and not host.replace(".", "").isdigit() else None


async def apply_changes(
    db: async_sessionmaker[AsyncSession], journal: Journal, account: AccountMap, changes: list[LeadChange], source: str,
) -> int:
    """Set the local stage, status and responsible of the leads we know; returns how many changed stage."""
    moved = 0
    async with db.begin() as session:
        for change in changes:
            lead = await leads.by_crm_lead(session, change.crm_lead_id)
            if lead is None:
                continue
            if change.responsible_user_id:
                lead.responsible_user_id = change.responsible_user_id
            if change.status_id is None:
                continue
            lead.crm_status_id, lead.crm_pipeline_id = change.status_id, change.pipeline_id or lead.crm_pipeline_id
            stage = account.stage_of(change.status_id, change.pipeline_id)
            if stage is not None and stage != lead.stage:
                previous, lead.stage = lead.stage, stage
                moved += 1
                await journal.event(session, lead, CRM_STAGE_CHANGED, stage=stage, previous=previous,
                                    status_id=change.status_id, pipeline_id=change.pipeline_id, source=source)
    return moved


def webhook_handler(
    db: async_sessionmaker[AsyncSession], journal: Journal, account: Callable[[], Awaitable[AccountMap | None]], base_url: str,
) -> Handler:
    """``POST /webhooks/amocrm/{secret}``: answer at once; a 503 makes amoCRM try again later."""
    from bot.web import error, read_body  # the web layer loads aiogram: only when the route is built

    ours = subdomain_of(base_url)

    async def handle(request: web.Request) -> web.Response:
        body = await read_body(request)
        try:
            form = parse_nested(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except (UnicodeDecodeError, ValueError) as exc:
            return error(400, f"malformed form body: {exc}")
        theirs = (form.get("account") or {}).get("subdomain") if isinstance(form.get("account"), dict) else None
        if ours and theirs and theirs != ours:
            log.warning("amocrm.webhook_foreign_account", subdomain=theirs)
            return web.json_response({"ok": True, "ignored": "another account"})
        mapping = await account()
        if mapping is None:
            return error(503, "amoCRM sync is not ready")
        changes = parse_changes(form)
        moved = await apply_changes(db, journal, mapping, changes, "webhook")
        log.info("amocrm.webhook", changes=len(changes), moved=moved)
        return web.json_response({"ok": True, "changes": len(changes), "moved": moved})

    return handle
