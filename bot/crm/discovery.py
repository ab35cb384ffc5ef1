"""Discovery: the configured pipeline, status, field, enum and user names resolved to amoCRM ids.

Every missing name is reported by name together with what exists instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.crm.client import AmoClient
from bot.crm.config import CrmConfig
from bot.quiz import Quiz, fold

WON, LOST = 142, 143
SPECIAL_FIELDS = ("source", "telegram")
FIELD_TYPES = {"multi": ("multiselect", "checkbox"), "single": ("select", "radiobutton"), "text": ("text", "textarea")}


@dataclass(frozen=True)
class LeadField:
    id: int
    name: str
    enums: dict[str, int] = field(default_factory=dict)  # quiz option key → enum id


@dataclass(frozen=True)
class AccountMap:
    """What the sync needs to know about the account, by id."""

    stages: dict[str, tuple[int, int]]  # local stage → (pipeline_id, status_id)
    lead_fields: dict[str, LeadField]  # config key → field
    contact_fields: dict[str, str]  # "phone"/"email" → field_code
    responsible_id: int | None = None
    loss_reason_id: int | None = None  # of the deals closed as duplicates
    timezone: ZoneInfo | None = None  # the account's: managers read every time in it
    warnings: tuple[str, ...] = ()  # what is missing but does not stop the sync

    def stage_of(self, status_id: int | None, pipeline_id: int | None) -> str | None:
        """The local stage of an amoCRM status: a funnel key, ``won``/``lost``, or None if unmapped."""
        if status_id == WON:
            return "won"
        if status_id == LOST:
            return "lost"
        return next((key for key, ids in self.stages.items() if ids[1] == status_id and pipeline_id in (None, ids[0])), None)


def _names(items: list[dict[str, Any]]) -> str:
    return ", ".join(f"«{item['name']}»" for item in items) or "nothing"


def _find(items: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((item for item in items if fold(item["name"]) == fold(name) or item.get("code") == name), None)


async def _named(client: AmoClient, path: str, entity: str, name: str | None, kind: str, setting: str, problems: list[str]) -> int | None:
    """The id of the configured ``name`` in a listing (None when not configured, or missing: then ``problems`` says so)."""
    if not name:
        return None
    items = [item async for item in client.pages(path, entity)]
    found = _find(items, name)
    if found is None:
        problems.append(f"{kind} «{name}» ({setting}) not found; amoCRM has {_names(items)}")
        return None
    return int(found["id"])


async def discover(client: AmoClient, config: CrmConfig, quiz: Quiz) -> tuple[AccountMap, list[str]]:
    """Read pipelines, fields and users; returns the map and the problems found (empty when all is there)."""
    problems: list[str] = []
    body = await client.get("/api/v4/leads/pipelines") or {}
    pipelines = body.get("_embedded", {}).get("pipelines", [])
    stages: dict[str, tuple[int, int]] = {}
    for key, (pipeline_name, status_name) in config.stages.items():
        pipeline = _find(pipelines, pipeline_name)
        if pipeline is None:
            problems.append(f"pipeline «{pipeline_name}» (stage {key}) not found; amoCRM has {_names(pipelines)}")
            continue
        statuses = [s for s in pipeline["_embedded"]["statuses"] if s.get("type", 0) == 0]
        status = _find(statuses, status_name)
        if status is None:
            problems.append(f"status «{status_name}» (stage {key}) not found in «{pipeline['name']}»; it has {_names(statuses)}")
            continue
        stages[key] = (pipeline["id"], status["id"])

    lead_fields = [f async for f in client.pages("/api/v4/leads/custom_fields", "custom_fields")]
    resolved: dict[str, LeadField] = {}
    for key, name in config.lead_fields.items():
        if name is None:
            continue
        question = quiz.question(key)
        if question is None and key not in SPECIAL_FIELDS:
            problems.append(f"lead_fields.{key}: not a quiz question nor one of {', '.join(SPECIAL_FIELDS)}")
            continue
        found = _find(lead_fields, name)
        if found is None:
            problems.append(f"lead field «{name}» ({key}) not found; amoCRM has {_names(lead_fields)}")
            continue
        expected = FIELD_TYPES[question.type if question else "text"]
        if found["type"] not in expected:
            problems.append(f"lead field «{found['name']}» ({key}) is {found['type']}, expected {' or '.join(expected)}")
            continue
        enums: dict[str, int] = {}
        for option in question.options if question else ():
            wanted = config.enums.get(key, {}).get(option.key) or option.label(config.language)
            enum = next((e for e in found.get("enums") or [] if fold(e["value"]) == fold(wanted)), None)
            if enum is None:
                existing = ", ".join(f"«{e['value']}»" for e in found.get("enums") or []) or "nothing"
                problems.append(f"value «{wanted}» of lead field «{found['name']}» not found; it has {existing}")
            else:
                enums[option.key] = enum["id"]
        resolved[key] = LeadField(found["id"], found["name"], enums)

    contact_fields = [f async for f in client.pages("/api/v4/contacts/custom_fields", "custom_fields")]
    codes: dict[str, str] = {}
    for key, code in config.contact_fields.items():
        found = _find(contact_fields, code)
        if found is None:
            problems.append(f"contact field {code} ({key}) not found; amoCRM has {_names(contact_fields)}")
        else:
            codes[key] = found.get("code") or code

    responsible_id = await _named(client, "/api/v4/users", "users", config.responsible, "user", "responsible", problems)
    # A missing loss reason only makes duplicates close without one: a warning, never a stop of the whole sync.
    warnings: list[str] = []
    loss_reason_id = await _named(client, "/api/v4/leads/loss_reasons", "loss_reasons", config.duplicate_loss_reason,
                                  "loss reason", "duplicate_loss_reason", warnings)
    if warnings:
        warnings[-1] += "; duplicate deals are closed without a reason until it is added"
    account = AccountMap(stages, resolved, codes, responsible_id, loss_reason_id, await _timezone(client), tuple(warnings))
    return account, problems


async def _timezone(client: AmoClient) -> ZoneInfo | None:
    """The account's time zone (``datetime_settings``); None if amoCRM names none the system knows."""
    body = await client.get("/api/v4/account", {"with": "datetime_settings"}) or {}
    name = body.get("_embedded", {}).get("datetime_settings", {}).get("timezone")
    try:
        return ZoneInfo(name) if name else None
    except (ZoneInfoNotFoundError, ValueError):
        return None
