"""The lead card and contact as amoCRM payloads, built from the local lead's current state."""
from __future__ import annotations

from typing import Any

from bot.crm.compose import Composer
from bot.crm.discovery import LOST, WON, AccountMap
from bot.db.models import Lead
from bot.funnel import STAGES
from bot.phones import normalise_phone


def source(lead: Lead) -> str | None:
    """``yandex / cpc / shoes`` from the UTM tags (Marquiz puts the campaign in ``name``)."""
    utm = lead.utm or {}
    parts = [utm.get("source") or lead.source, utm.get("medium"), utm.get("campaign") or utm.get("name")]
    return " / ".join(str(p) for p in parts if p) or None


def lead_fields(lead: Lead, account: AccountMap, composer: Composer, given: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """``custom_fields_values`` for every configured field that has a value (``given``: values events carry)."""
    values: list[dict[str, Any]] = []
    for key, field in account.lead_fields.items():
        if given is not None and key in given:
            text = given[key]
        elif key == "source":
            text = source(lead)
        elif key == "telegram":
            text = composer.telegram(lead)
        else:
            answer = (lead.interests or {}).get(key)
            if field.enums:
                picked = [field.enums[k] for k in (answer if isinstance(answer, list) else [answer]) if k in field.enums]
                if picked:
                    values.append({"field_id": field.id, "values": [{"enum_id": enum_id} for enum_id in picked]})
                continue
            text = str(answer) if answer else None
        if text:
            values.append({"field_id": field.id, "values": [{"value": text[:256]}]})
    return values


def tags(lead: Lead, configured: list[str]) -> list[dict[str, str]]:
    """``tags_to_add`` of the card: the configured tags and the lead's own."""
    return [{"name": name} for name in dict.fromkeys([*configured, *(lead.tags or [])])]


def moves_to(lead: Lead, target: str | None, account: AccountMap, *, chosen: bool = False) -> bool:
    """Whether the card goes to ``target``: the bot moves forward only, never back nor out of a closed status (a
    manager's unmapped status counts as before); a stage a manager chose in the operator chat is applied as it is."""
    if target is None:
        return False
    current = account.stage_of(lead.crm_status_id, lead.crm_pipeline_id)
    if chosen:
        return current != target
    if lead.crm_status_id in (WON, LOST):
        return False
    return current not in STAGES or STAGES.index(target) > STAGES.index(current)


def contact_fields(lead: Lead, account: AccountMap) -> list[dict[str, Any]]:
    values = []
    if lead.phone and "phone" in account.contact_fields:
        values.append({"field_code": account.contact_fields["phone"], "values": [{"value": lead.phone, "enum_code": "MOB"}]})
    if lead.email and "email" in account.contact_fields:
        values.append({"field_code": account.contact_fields["email"], "values": [{"value": lead.email, "enum_code": "WORK"}]})
    return values


def new_contact(lead: Lead, account: AccountMap, composer: Composer) -> dict[str, Any]:
    contact: dict[str, Any] = {"name": composer.buyer(lead)}
    if lead.first_name:
        contact["first_name"] = lead.first_name
    if lead.last_name:
        contact["last_name"] = lead.last_name
    if account.responsible_id:
        contact["responsible_user_id"] = account.responsible_id
    fields = contact_fields(lead, account)
    if fields:
        contact["custom_fields_values"] = fields
    return contact


def contact_query(lead: Lead) -> str | None:
    """What to search the buyer's contacts by: the phone's national digits (``+7`` vs ``8`` would not match), else the email.

    A phone the buyer only typed in the bot finds nobody: anyone can type anyone's number, and the deal would join that
    person's contact (the same rule as the website quiz, which a typed phone never claims)."""
    if lead.phone and not lead.phone_typed:
        return "".join(ch for ch in lead.phone if ch.isdigit())[-10:]
    return lead.email


def is_buyer(contact: dict[str, Any], lead: Lead) -> bool:
    """Whether the contact has the lead's confirmed phone (normalised), or else its email."""
    def values(code: str) -> list[str]:
        return [str(value.get("value")) for field in contact.get("custom_fields_values") or [] if field.get("field_code") == code
                for value in field.get("values") or []]

    if lead.phone and not lead.phone_typed:
        return any(normalise_phone(value) == lead.phone for value in values("PHONE"))
    return bool(lead.email) and any(value.strip().lower() == lead.email.lower() for value in values("EMAIL"))


def merged_values(contact: dict[str, Any], lead: Lead, account: AccountMap) -> list[dict[str, Any]] | None:
    """The contact's PHONE/EMAIL values with the lead's added, or None if nothing is missing."""
    changes = []
    for wanted in contact_fields(lead, account):
        current = next((f for f in contact.get("custom_fields_values") or [] if f.get("field_code") == wanted["field_code"]), None)
        existing = [{"value": v["value"], "enum_code": v.get("enum_code", "WORK")} for v in (current or {}).get("values", [])]
        new = wanted["values"][0]
        known = {normalise_phone(v["value"]) or v["value"].lower() for v in existing}
        if (normalise_phone(new["value"]) or new["value"].lower()) not in known:
            changes.append({"field_code": wanted["field_code"], "values": existing + [new]})
    return changes or None
