"""The lead card and contact as amoCRM payloads, built from the local lead's current state."""
from __future__ import annotations

from typing import Any

from bot.crm.compose import Composer
from bot.crm.discovery import AccountMap
from bot.db.models import Lead
from bot.phones import normalise_phone


def source(lead: Lead) -> str | None:
    """``yandex / cpc / shoes`` from the UTM tags (Marquiz puts the campaign in ``name``)."""
    utm = lead.utm or {}
    parts = [utm.get("source") or lead.source, utm.get("medium"), utm.get("campaign") or utm.get("name")]
    return " / ".join(str(p) for p in parts if p) or None


def lead_fields(lead: Lead, account: AccountMap, composer: Composer) -> list[dict[str, Any]]:
    """``custom_fields_values`` for every configured field that has a value."""
    values: list[dict[str, Any]] = []
    for key, field in account.lead_fields.items():
        if key == "source":
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


def phone_query(phone: str) -> str:
    """What to search contacts by: the national number's digits (``+7`` vs ``8`` would not match)."""
    digits = "".join(ch for ch in phone if ch.isdigit())
    return digits[-10:]


def has_phone(contact: dict[str, Any], phone: str) -> bool:
    """Whether one of the contact's PHONE values is ``phone`` once normalised."""
    return any(
        normalise_phone(str(value.get("value"))) == phone
        for field in contact.get("custom_fields_values") or [] if field.get("field_code") == "PHONE"
        for value in field.get("values") or []
    )


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
