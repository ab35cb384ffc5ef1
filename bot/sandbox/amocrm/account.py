"""An in-memory amoCRM account with the API v4 rules the bot relies on.

Batch calls take JSON arrays (≤ 250 items, ``/leads/complex`` ≤ 50) and are all-or-nothing:
one bad item rejects the request with 400 ``validation-errors`` naming it by ``request_id``.
Unknown fields and enums are ``NotSupportedChoice``; a status must belong to its pipeline
(142/143 exist in every pipeline and need ``pipeline_id``); empty searches are 204. The account has a
time zone (``GET /api/v4/account?with=datetime_settings``) and shows every moment in it.
"""
from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

WON, LOST = 142, 143
BATCH_LIMIT, COMPLEX_LIMIT = 250, 50
NOTE_TYPES = {"common", "call_in", "call_out", "service_message", "extended_service_message", "sms_in", "sms_out", "geolocation", "attachment"}
PHONE_ENUMS = ("WORK", "WORKDD", "MOB", "FAX", "HOME", "OTHER")
EMAIL_ENUMS = ("WORK", "PRIV", "OTHER")

SEED_PIPELINES = {
    "Привлечение": ["Новая заявка", "Квалификация пройдена", "Каталог отправлен", "Тестовая партия отправлена"],
    "Тестовая партия": [
        "Тестовая партия получена", "Тестовая прошла проверку", "Основная партия согласована",
        "Основная партия отправлена", "Повторная продажа",
    ],
}
SEED_LEAD_FIELDS: list[tuple[str, str, list[str]]] = [
    ("Категория", "multiselect", ["Женская одежда", "Мужская одежда", "Детская одежда", "Обувь", "Аксессуары"]),
    ("Объём закупки", "select", ["до 100 тыс ₽", "100–300 тыс ₽", "300 тыс – 1 млн ₽", "более 1 млн ₽"]),
    ("Канал продаж", "select", ["Свой магазин", "Маркетплейсы", "Соцсети", "Пока не продаю"]),
    ("Город", "text", []),
    ("Источник", "text", []),
    ("Telegram", "text", []),
]
SEED_USERS = ["Администратор", "Мария Соколова", "Иван Петров"]
SEED_LOSS_REASONS = ["Дубль", "Не вышел на связь", "Дорого", "Купил у другого поставщика"]


class ApiError(Exception):
    """An amoCRM error answer (``application/problem+json``)."""

    def __init__(self, status: int, detail: str, validation: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.body: dict[str, Any] = {
            "title": {400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}.get(status, "Error"),
            "type": f"https://httpstatus.es/{status}", "status": status, "detail": detail,
        }
        if validation:
            self.body["validation-errors"] = validation


def _digits(text: Any) -> str:
    return re.sub(r"\D", "", str(text or ""))


def _fold(text: Any) -> str:
    return str(text or "").strip().lower().replace("ё", "е")


class Invalid:
    """Collects per-item validation errors of one batch call."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self._current: list[dict[str, str]] = []

    def add(self, code: str, path: str, detail: str) -> None:
        self._current.append({"code": code, "path": path, "detail": detail})

    def close_item(self, request_id: str) -> None:
        if self._current:
            self.items.append({"request_id": request_id, "errors": self._current})
        self._current = []

    def raise_if_any(self) -> None:
        if self.items:
            raise ApiError(400, "Request validation failed", self.items)


class Account:
    def __init__(self, *, clock: Callable[[], float] = time.time, timezone: str = "Europe/Moscow") -> None:
        self.id, self.subdomain = 31337, "optobot"
        self.clock = clock
        self.timezone = ZoneInfo(timezone)
        self._ids = {kind: itertools.count(start) for kind, start in (
            ("user", 1001), ("pipeline", 5001), ("status", 60001), ("field", 700001), ("enum", 800001),
            ("lead", 3000001), ("contact", 4000001), ("note", 9000001), ("task", 2000001), ("tag", 100001),
            ("loss_reason", 40001), ("task_type", 3001),
        )}
        self.users: dict[int, dict[str, Any]] = {}
        self.pipelines: dict[int, dict[str, Any]] = {}
        self.statuses: dict[int, dict[str, Any]] = {}  # regular statuses; 142/143 live in every pipeline
        self.fields: dict[str, dict[int, dict[str, Any]]] = {"leads": {}, "contacts": {}}
        self.tags: dict[str, int] = {}
        self.leads: dict[int, dict[str, Any]] = {}
        self.contacts: dict[int, dict[str, Any]] = {}
        self.notes: dict[int, dict[str, Any]] = {}
        self.tasks: dict[int, dict[str, Any]] = {}
        self.task_types: dict[int, dict[str, Any]] = {1: {"id": 1, "name": "Связаться", "code": "FOLLOW_UP"},
                                                      2: {"id": 2, "name": "Встреча", "code": "MEETING"}}
        self.loss_reasons: dict[int, dict[str, Any]] = {}

    def _next(self, kind: str) -> int:
        return next(self._ids[kind])

    def _now(self) -> int:
        return int(self.clock())

    # ----------------------------------------------------------------- setup
    def seed(self) -> Account:
        """The seed's account: two pipelines, the quiz fields, three users, the usual loss reasons."""
        for name in SEED_USERS:
            self.add_user(name)
        for name in SEED_LOSS_REASONS:
            self.add_loss_reason(name)
        for name, statuses in SEED_PIPELINES.items():
            self.add_pipeline(name, statuses, is_main=not self.pipelines)
        for name, kind, enums in SEED_LEAD_FIELDS:
            self.add_field("leads", name, kind, enums)
        self.add_field("contacts", "Телефон", "multitext", list(PHONE_ENUMS), code="PHONE")
        self.add_field("contacts", "Email", "multitext", list(EMAIL_ENUMS), code="EMAIL")
        self.add_field("contacts", "Должность", "text", [], code="POSITION")
        return self

    def add_user(self, name: str) -> int:
        user_id = self._next("user")
        self.users[user_id] = {"id": user_id, "name": name, "email": f"user{user_id}@example.com", "lang": "ru",
                               "rights": {"is_admin": not self.users, "is_active": True}}
        return user_id

    def add_pipeline(self, name: str, statuses: list[str], *, is_main: bool = False) -> int:
        pipeline_id = self._next("pipeline")
        self.pipelines[pipeline_id] = {"id": pipeline_id, "name": name, "sort": len(self.pipelines) * 10 + 10,
                                       "is_main": is_main, "is_unsorted_on": True, "is_archive": False}
        for sort, (status, kind) in enumerate([("Неразобранное", 1)] + [(s, 0) for s in statuses]):
            status_id = self._next("status")
            self.statuses[status_id] = {"id": status_id, "name": status, "sort": sort * 10, "is_editable": kind == 0,
                                        "pipeline_id": pipeline_id, "color": "#99ccff", "type": kind, "account_id": self.id}
        return pipeline_id

    def add_loss_reason(self, name: str) -> int:
        reason_id, now = self._next("loss_reason"), self._now()
        self.loss_reasons[reason_id] = {"id": reason_id, "name": name, "sort": len(self.loss_reasons) * 10,
                                        "created_at": now, "updated_at": now}
        return reason_id

    def datetime_settings(self) -> dict[str, str]:
        """``_embedded.datetime_settings`` of ``GET /api/v4/account``."""
        offset = datetime.now(self.timezone).strftime("%z")
        return {"date_pattern": "d.m.Y H:i", "short_date_pattern": "d.m.Y", "short_time_pattern": "H:i", "date_format": "d.m.Y",
                "time_format": "H:i:s", "timezone": str(self.timezone), "timezone_offset": f"{offset[:3]}:{offset[3:]}"}

    def local(self, timestamp: int) -> str:
        """A moment as the account shows it: in its time zone."""
        return datetime.fromtimestamp(timestamp, self.timezone).strftime("%d.%m %H:%M")

    def add_field(self, entity: str, name: str, kind: str, enums: Iterable[str] = (), *, code: str | None = None) -> int:
        field_id = self._next("field")
        values = list(enums)
        self.fields[entity][field_id] = {
            "id": field_id, "name": name, "code": code, "type": kind, "sort": len(self.fields[entity]) * 10,
            "entity_type": entity, "is_api_only": False,
            "enums": [{"id": self._next("enum"), "value": value, "sort": i * 10} for i, value in enumerate(values)] if values else None,
        }
        return field_id

    # ---------------------------------------------------------------- lookups
    def pipeline_statuses(self, pipeline_id: int) -> list[dict[str, Any]]:
        own = [s for s in self.statuses.values() if s["pipeline_id"] == pipeline_id]
        closed = [
            {"id": WON, "name": "Успешно реализовано", "sort": 10000, "is_editable": False, "pipeline_id": pipeline_id, "type": 0},
            {"id": LOST, "name": "Закрыто и не реализовано", "sort": 11000, "is_editable": False, "pipeline_id": pipeline_id, "type": 0},
        ]
        return sorted(own, key=lambda s: s["sort"]) + closed

    def status_name(self, status_id: int | None, pipeline_id: int | None = None) -> str:
        if status_id in (WON, LOST):
            return "Успешно реализовано" if status_id == WON else "Закрыто и не реализовано"
        return self.statuses[status_id]["name"] if status_id in self.statuses else f"#{status_id}"

    def status_id(self, pipeline: str, status: str) -> int:
        """Test helper: a status id by names."""
        pipeline_id = next(p["id"] for p in self.pipelines.values() if p["name"] == pipeline)
        return next(s["id"] for s in self.pipeline_statuses(pipeline_id) if s["name"] == status)

    def loss_reason_id(self, name: str) -> int:
        """Test helper: a loss reason id by name."""
        return next(r["id"] for r in self.loss_reasons.values() if r["name"] == name)

    def field_by_name(self, entity: str, name: str) -> dict[str, Any]:
        return next(f for f in self.fields[entity].values() if f["name"] == name or f["code"] == name)

    def _field(self, entity: str, ref: dict[str, Any]) -> dict[str, Any] | None:
        if "field_id" in ref:
            return self.fields[entity].get(ref["field_id"]) if isinstance(ref["field_id"], int) else None
        return next((f for f in self.fields[entity].values() if f["code"] and f["code"] == ref.get("field_code")), None)

    # ----------------------------------------------------------- validation
    def _custom_fields(self, entity: str, raw: Any, invalid: Invalid) -> list[dict[str, Any]]:
        """Validate ``custom_fields_values``; returns them in amoCRM's stored shape."""
        if raw is None:
            return []
        if not isinstance(raw, list):
            invalid.add("InvalidType", "custom_fields_values", "This value should be of type array.")
            return []
        stored = []
        for i, ref in enumerate(raw):
            path = f"custom_fields_values.{i}"
            field = self._field(entity, ref if isinstance(ref, dict) else {})
            if field is None:
                key = "field_id" if isinstance(ref, dict) and "field_id" in ref else "field_code"
                invalid.add("NotSupportedChoice", f"{path}.{key}", "The value you selected is not a valid choice.")
                continue
            values = ref.get("values")
            if not isinstance(values, list) or not values:
                invalid.add("NotBlank", f"{path}.values", "This value should not be blank.")
                continue
            if field["type"] == "select" and len(values) > 1:
                invalid.add("TooMany", f"{path}.values", "A select field takes one value.")
                continue
            out = []
            for j, value in enumerate(values):
                vpath = f"{path}.values.{j}"
                if not isinstance(value, dict):
                    invalid.add("InvalidType", vpath, "This value should be of type object.")
                    continue
                if field["type"] in ("select", "multiselect", "radiobutton"):
                    enum = next((e for e in field["enums"] or [] if e["id"] == value.get("enum_id")
                                 or ("enum_id" not in value and _fold(e["value"]) == _fold(value.get("value")))), None)
                    if enum is None:
                        invalid.add("NotSupportedChoice", f"{vpath}.enum_id", "The value you selected is not a valid choice.")
                        continue
                    out.append({"value": enum["value"], "enum_id": enum["id"]})
                elif field["type"] == "multitext":
                    code = value.get("enum_code", "WORK")
                    if code not in [e["value"] for e in field["enums"] or []]:
                        invalid.add("NotSupportedChoice", f"{vpath}.enum_code", "The value you selected is not a valid choice.")
                        continue
                    if not str(value.get("value") or "").strip():
                        invalid.add("NotBlank", f"{vpath}.value", "This value should not be blank.")
                        continue
                    out.append({"value": str(value["value"]), "enum_code": code})
                else:
                    if "enum_code" in value or "enum_id" in value:
                        invalid.add("FieldNotExpected", f"{vpath}.enum_code", "This field was not expected.")
                        continue
                    if not isinstance(value.get("value"), (str, int, float)):
                        invalid.add("InvalidType", f"{vpath}.value", "This value should be of type string.")
                        continue
                    out.append({"value": str(value["value"])})
            stored.append({"field_id": field["id"], "field_name": field["name"], "field_code": field["code"],
                           "field_type": field["type"], "values": out})
        return stored

    def _placement(self, item: dict[str, Any], invalid: Invalid, current: dict[str, Any] | None) -> tuple[int, int] | None:
        """The (pipeline_id, status_id) an item asks for, validated; the current one if it asks for none."""
        status_id, pipeline_id = item.get("status_id"), item.get("pipeline_id")
        if status_id is None and pipeline_id is None:
            if current is not None:
                return current["pipeline_id"], current["status_id"]
            pipeline_id = next(p["id"] for p in self.pipelines.values() if p["is_main"])
        if pipeline_id is not None and pipeline_id not in self.pipelines:
            invalid.add("NotSupportedChoice", "pipeline_id", "The value you selected is not a valid choice.")
            return None
        if status_id is None:
            first = next(s for s in self.pipeline_statuses(pipeline_id) if s["type"] == 0)
            return pipeline_id, first["id"]
        if status_id in (WON, LOST):
            if pipeline_id is None:
                invalid.add("NotSupportedChoice", "status_id", "Closed statuses need pipeline_id.")
                return None
            return pipeline_id, status_id
        status = self.statuses.get(status_id)
        if status is None or (pipeline_id is not None and status["pipeline_id"] != pipeline_id):
            invalid.add("NotSupportedChoice", "status_id", "The status does not belong to the pipeline.")
            return None
        return status["pipeline_id"], status_id

    def _user(self, item: dict[str, Any], invalid: Invalid) -> int | None:
        user_id = item.get("responsible_user_id")
        if user_id is not None and user_id not in self.users:
            invalid.add("NotSupportedChoice", "responsible_user_id", "The value you selected is not a valid choice.")
        return user_id

    def _tags(self, raw: Any) -> list[dict[str, Any]]:
        tags = []
        for tag in raw or []:
            name = tag.get("name") if isinstance(tag, dict) else None
            if name:
                tags.append({"id": self.tags.setdefault(name, self._next("tag")), "name": name})
        return tags

    @staticmethod
    def _batch(items: Any, limit: int = BATCH_LIMIT) -> list[dict[str, Any]]:
        if not isinstance(items, list):
            raise ApiError(400, "Request body must be an array of objects")
        if not items:
            raise ApiError(400, "Request body is empty")
        if len(items) > limit:
            raise ApiError(400, f"Too many entities in one request: {len(items)} > {limit}")
        if not all(isinstance(item, dict) for item in items):
            raise ApiError(400, "Every element must be an object")
        return items

    @staticmethod
    def _request_id(item: dict[str, Any], index: int) -> str:
        return str(item.get("request_id", index))

    # -------------------------------------------------------------- contacts
    def _check_contact(self, item: dict[str, Any], invalid: Invalid, current: dict[str, Any] | None = None) -> dict[str, Any]:
        fields = self._custom_fields("contacts", item.get("custom_fields_values"), invalid)
        name = item.get("name") or " ".join(p for p in (item.get("first_name"), item.get("last_name")) if p)
        return {"name": name or (current or {}).get("name") or "", "first_name": item.get("first_name"),
                "last_name": item.get("last_name"), "responsible_user_id": self._user(item, invalid), "fields": fields}

    def _store_contact(self, checked: dict[str, Any], current: dict[str, Any] | None = None) -> dict[str, Any]:
        now = self._now()
        contact = current or {"id": self._next("contact"), "created_at": now, "fields": [], "leads": [],
                              "responsible_user_id": next(iter(self.users))}
        contact["name"] = checked["name"] or contact.get("name", "")
        contact["first_name"] = checked["first_name"] or contact.get("first_name")
        contact["last_name"] = checked["last_name"] or contact.get("last_name")
        if checked["responsible_user_id"]:
            contact["responsible_user_id"] = checked["responsible_user_id"]
        contact["fields"] = _merge_fields(contact["fields"], checked["fields"])
        contact["updated_at"] = now
        self.contacts[contact["id"]] = contact
        return contact

    def add_contacts(self, items: Any) -> list[dict[str, Any]]:
        items, invalid = self._batch(items), Invalid()
        checked = []
        for i, item in enumerate(items):
            checked.append(self._check_contact(item, invalid))
            invalid.close_item(self._request_id(item, i))
        invalid.raise_if_any()
        return [{"id": self._store_contact(c)["id"], "request_id": self._request_id(item, i)}
                for i, (item, c) in enumerate(zip(items, checked))]

    def update_contacts(self, items: Any) -> list[dict[str, Any]]:
        items, invalid = self._batch(items), Invalid()
        checked = []
        for i, item in enumerate(items):
            if item.get("id") not in self.contacts:
                invalid.add("NotFound", "id", "Contact not found")
            checked.append(self._check_contact(item, invalid, self.contacts.get(item.get("id"))))
            invalid.close_item(self._request_id(item, i))
        invalid.raise_if_any()
        return [{"id": self._store_contact(c, self.contacts[item["id"]])["id"], "updated_at": self._now()}
                for item, c in zip(items, checked)]

    def contact_json(self, contact: dict[str, Any], *, with_leads: bool = False) -> dict[str, Any]:
        out = {key: contact.get(key) for key in ("id", "name", "first_name", "last_name", "responsible_user_id", "created_at", "updated_at")}
        out["custom_fields_values"] = contact["fields"] or None
        out["account_id"] = self.id
        out["_embedded"] = {"tags": [], "companies": []}
        if with_leads:
            out["_embedded"]["leads"] = [{"id": lead_id} for lead_id in contact["leads"]]
        return out

    def find_contacts(self, query: str | None) -> list[dict[str, Any]]:
        found = list(self.contacts.values())
        if query:
            digits, folded = _digits(query), _fold(query)
            found = [c for c in found if folded in _fold(c["name"]) or any(
                folded in _fold(v["value"]) or (len(digits) >= 5 and digits in _digits(v["value"]))
                for f in c["fields"] for v in f["values"])]
        return found

    # ----------------------------------------------------------------- leads
    def _check_lead(self, item: dict[str, Any], invalid: Invalid, current: dict[str, Any] | None = None) -> dict[str, Any]:
        placement = self._placement(item, invalid, current)
        fields = self._custom_fields("leads", item.get("custom_fields_values"), invalid)
        contacts = []
        for j, ref in enumerate((item.get("_embedded") or {}).get("contacts") or []):
            if isinstance(ref, dict) and "id" in ref and ref["id"] not in self.contacts:
                invalid.add("NotFound", f"_embedded.contacts.{j}.id", "Contact not found")
            elif isinstance(ref, dict) and "id" in ref:
                contacts.append(ref["id"])
        tags = (item.get("_embedded") or {}).get("tags") or []
        loss_reason = item.get("loss_reason_id")
        if loss_reason is not None and loss_reason not in self.loss_reasons:
            invalid.add("NotSupportedChoice", "loss_reason_id", "The value you selected is not a valid choice.")
        return {"name": item.get("name"), "price": item.get("price"), "placement": placement, "fields": fields,
                "responsible_user_id": self._user(item, invalid), "contacts": contacts, "loss_reason_id": loss_reason,
                "tags": self._tags(tags) + self._tags(item.get("tags_to_add")),
                "tags_to_delete": {t.get("name") for t in item.get("tags_to_delete") or [] if isinstance(t, dict)}}

    def _store_lead(self, checked: dict[str, Any], current: dict[str, Any] | None = None) -> dict[str, Any]:
        now = self._now()
        lead = current or {"id": self._next("lead"), "created_at": now, "fields": [], "tags": [], "contacts": [],
                           "price": 0, "closed_at": None, "responsible_user_id": next(iter(self.users)), "name": ""}
        if checked["name"] is not None:
            lead["name"] = checked["name"]
        elif current is None:
            lead["name"] = f"Сделка #{lead['id']}"
        if checked["price"] is not None:
            lead["price"] = checked["price"]
        if checked["responsible_user_id"]:
            lead["responsible_user_id"] = checked["responsible_user_id"]
        lead["pipeline_id"], lead["status_id"] = checked["placement"]
        lead["closed_at"] = now if lead["status_id"] in (WON, LOST) else None
        lead["loss_reason_id"] = (checked["loss_reason_id"] or lead.get("loss_reason_id")) if lead["status_id"] == LOST else None
        lead["fields"] = _merge_fields(lead["fields"], checked["fields"])
        names = {t["name"] for t in lead["tags"]}
        lead["tags"] = [t for t in lead["tags"] if t["name"] not in checked["tags_to_delete"]]
        lead["tags"] += [t for t in checked["tags"] if t["name"] not in names]
        for contact_id in checked["contacts"]:
            self._link(lead, contact_id)
        lead["updated_at"] = now
        self.leads[lead["id"]] = lead
        return lead

    def _link(self, lead: dict[str, Any], contact_id: int) -> None:
        if contact_id not in lead["contacts"]:
            lead["contacts"].append(contact_id)
            self.contacts[contact_id]["leads"].append(lead["id"])

    def link(self, lead_id: int, items: Any) -> list[dict[str, Any]]:
        """``POST /leads/{id}/link``: contacts (the only kind the sandbox holds) linked to a lead."""
        items, invalid = self._batch(items), Invalid()
        lead = self.leads.get(lead_id)
        if lead is None:
            raise ApiError(404, "Lead not found")
        for i, item in enumerate(items):
            if item.get("to_entity_type") != "contacts":
                invalid.add("NotSupportedChoice", "to_entity_type", "The value you selected is not a valid choice.")
            elif item.get("to_entity_id") not in self.contacts:
                invalid.add("NotFound", "to_entity_id", "Entity not found")
            invalid.close_item(self._request_id(item, i))
        invalid.raise_if_any()
        for item in items:
            self._link(lead, item["to_entity_id"])
        lead["updated_at"] = self._now()
        return [{"entity_id": lead_id, "entity_type": "leads", "to_entity_id": item["to_entity_id"], "to_entity_type": "contacts",
                 "metadata": {"main_contact": lead["contacts"][0] == item["to_entity_id"]}} for item in items]

    def add_leads(self, items: Any) -> list[dict[str, Any]]:
        items, invalid = self._batch(items), Invalid()
        checked = []
        for i, item in enumerate(items):
            checked.append(self._check_lead(item, invalid))
            invalid.close_item(self._request_id(item, i))
        invalid.raise_if_any()
        return [{"id": self._store_lead(c)["id"], "request_id": self._request_id(item, i)}
                for i, (item, c) in enumerate(zip(items, checked))]

    def update_leads(self, items: Any) -> list[dict[str, Any]]:
        items, invalid = self._batch(items), Invalid()
        checked = []
        for i, item in enumerate(items):
            current = self.leads.get(item.get("id"))
            if current is None:
                invalid.add("NotFound", "id", "Lead not found")
            checked.append(self._check_lead(item, invalid, current))
            invalid.close_item(self._request_id(item, i))
        invalid.raise_if_any()
        return [{"id": item["id"], "updated_at": self._store_lead(c, self.leads[item["id"]])["updated_at"]}
                for item, c in zip(items, checked)]

    def add_complex(self, items: Any) -> list[dict[str, Any]]:
        """``POST /leads/complex``: a lead with one new or existing contact each."""
        items, invalid = self._batch(items, COMPLEX_LIMIT), Invalid()
        checked = []
        for i, item in enumerate(items):
            contacts = (item.get("_embedded") or {}).get("contacts") or []
            if len(contacts) > 1:
                invalid.add("TooMany", "_embedded.contacts", "At most one contact per lead.")
            new_contact = None
            if contacts and isinstance(contacts[0], dict) and "id" not in contacts[0]:
                new_contact = self._check_contact(contacts[0], invalid)
                item = {**item, "_embedded": {**item["_embedded"], "contacts": []}}
            checked.append((self._check_lead(item, invalid), new_contact))
            invalid.close_item(self._request_id(item, i))
        invalid.raise_if_any()
        results = []
        for i, (item, (lead_checked, contact_checked)) in enumerate(zip(items, checked)):
            lead = self._store_lead(lead_checked)
            contact_id = lead["contacts"][0] if lead["contacts"] else None
            if contact_checked is not None:
                contact_id = self._store_contact(contact_checked)["id"]
                self._link(lead, contact_id)
            results.append({"id": lead["id"], "contact_id": contact_id, "company_id": None,
                            "request_id": [self._request_id(item, i)], "merged": False})
        return results

    def lead_json(self, lead: dict[str, Any], *, with_contacts: bool = False) -> dict[str, Any]:
        open_tasks = [t["complete_till"] for t in self.tasks.values()
                      if t["entity_type"] == "leads" and t["entity_id"] == lead["id"] and not t["is_completed"]]
        out = {key: lead.get(key) for key in ("id", "name", "price", "responsible_user_id", "status_id", "pipeline_id",
                                               "created_at", "updated_at", "closed_at")}
        out.update({"group_id": 0, "loss_reason_id": lead.get("loss_reason_id"), "created_by": 0, "updated_by": 0, "is_deleted": False,
                    "closest_task_at": min(open_tasks) if open_tasks else None, "score": None, "account_id": self.id,
                    "custom_fields_values": lead["fields"] or None})
        out["_embedded"] = {"tags": list(lead["tags"]), "companies": []}
        if with_contacts:
            out["_embedded"]["contacts"] = [{"id": c, "is_main": i == 0} for i, c in enumerate(lead["contacts"])]
        return out

    def find_leads(self, *, query: str | None = None, ids: list[int] | None = None,
                   updated_from: int | None = None, updated_to: int | None = None, order: tuple[str, str] | None = None) -> list[dict[str, Any]]:
        found = list(self.leads.values())
        if ids:
            found = [lead for lead in found if lead["id"] in ids]
        if updated_from is not None:
            found = [lead for lead in found if lead["updated_at"] >= updated_from]
        if updated_to is not None:
            found = [lead for lead in found if lead["updated_at"] <= updated_to]
        if query:
            folded = _fold(query)
            found = [lead for lead in found if folded in _fold(lead["name"]) or any(
                folded in _fold(v["value"]) for f in lead["fields"] for v in f["values"])]
        if order:
            key, direction = order
            found.sort(key=lambda lead: (lead.get(key) or 0, lead["id"]), reverse=direction == "desc")
        return found

    # ----------------------------------------------------------------- notes
    def add_notes(self, items: Any, entity_id: int | None = None) -> list[dict[str, Any]]:
        items, invalid = self._batch(items), Invalid()
        for i, item in enumerate(items):
            target = entity_id or item.get("entity_id")
            if target not in self.leads:
                invalid.add("NotFound", "entity_id", "Entity not found")
            if item.get("note_type") not in NOTE_TYPES:
                invalid.add("NotSupportedChoice", "note_type", "The value you selected is not a valid choice.")
            elif item.get("note_type") in ("common", "service_message", "extended_service_message") and not str(
                    (item.get("params") or {}).get("text") or "").strip():
                invalid.add("NotBlank", "params.text", "This value should not be blank.")
            invalid.close_item(self._request_id(item, i))
        invalid.raise_if_any()
        out = []
        for i, item in enumerate(items):
            note_id, now = self._next("note"), self._now()
            target = entity_id or item["entity_id"]
            self.notes[note_id] = {"id": note_id, "entity_id": target, "entity_type": "leads", "note_type": item["note_type"],
                                   "params": dict(item.get("params") or {}), "created_at": now, "updated_at": now,
                                   "created_by": 0, "responsible_user_id": self.leads[target]["responsible_user_id"]}
            self.leads[target]["updated_at"] = now
            out.append({"id": note_id, "entity_id": target, "request_id": self._request_id(item, i)})
        return out

    def find_notes(self, *, entity_ids: list[int] | None = None, note_type: str | None = None, order_desc: bool = False) -> list[dict[str, Any]]:
        found = [n for n in self.notes.values() if (not entity_ids or n["entity_id"] in entity_ids)
                 and (note_type is None or n["note_type"] == note_type)]
        return sorted(found, key=lambda n: n["id"], reverse=order_desc)

    def note_json(self, note: dict[str, Any]) -> dict[str, Any]:
        return {**{k: v for k, v in note.items() if k != "entity_type"}, "group_id": 0, "updated_by": 0, "account_id": self.id}

    # ----------------------------------------------------------------- tasks
    def _check_task(self, item: dict[str, Any], invalid: Invalid, *, new: bool) -> None:
        if new and not str(item.get("text") or "").strip():
            invalid.add("NotBlank", "text", "This value should not be blank.")
        if new and not isinstance(item.get("complete_till"), int):
            invalid.add("NotBlank", "complete_till", "This value should not be blank.")
        if "entity_id" in item or "entity_type" in item:
            if item.get("entity_type") != "leads":
                invalid.add("NotSupportedChoice", "entity_type", "The value you selected is not a valid choice.")
            elif item.get("entity_id") not in self.leads:
                invalid.add("NotFound", "entity_id", "Entity not found")
        if item.get("task_type_id", 1) not in self.task_types:
            invalid.add("NotSupportedChoice", "task_type_id", "The value you selected is not a valid choice.")
        self._user(item, invalid)

    def add_task_type(self, name: str) -> int:
        """An account's own task type (amoCRM → Settings → task types)."""
        type_id = self._next("task_type")
        self.task_types[type_id] = {"id": type_id, "name": name, "code": None}
        return type_id

    def add_tasks(self, items: Any) -> list[dict[str, Any]]:
        items, invalid = self._batch(items), Invalid()
        for i, item in enumerate(items):
            self._check_task(item, invalid, new=True)
            invalid.close_item(self._request_id(item, i))
        invalid.raise_if_any()
        out = []
        for i, item in enumerate(items):
            task_id, now = self._next("task"), self._now()
            self.tasks[task_id] = {
                "id": task_id, "text": item["text"], "complete_till": item["complete_till"],
                "entity_type": item.get("entity_type"), "entity_id": item.get("entity_id"),
                "task_type_id": item.get("task_type_id", 1), "duration": item.get("duration", 0),
                "responsible_user_id": item.get("responsible_user_id") or next(iter(self.users)),
                "is_completed": bool(item.get("is_completed", False)), "result": item.get("result") or {},
                "created_at": now, "updated_at": now, "created_by": 0, "account_id": self.id,
            }
            out.append({"id": task_id, "request_id": self._request_id(item, i)})
        return out

    def update_tasks(self, items: Any) -> list[dict[str, Any]]:
        items, invalid = self._batch(items), Invalid()
        for i, item in enumerate(items):
            if item.get("id") not in self.tasks:
                invalid.add("NotFound", "id", "Task not found")
            self._check_task(item, invalid, new=False)
            invalid.close_item(self._request_id(item, i))
        invalid.raise_if_any()
        for item in items:
            task = self.tasks[item["id"]]
            editable = ("text", "complete_till", "is_completed", "result", "responsible_user_id", "entity_id", "entity_type", "task_type_id")
            task.update({k: v for k, v in item.items() if k in editable})
            task["updated_at"] = self._now()
        return [{"id": item["id"], "updated_at": self.tasks[item["id"]]["updated_at"]} for item in items]

    def find_tasks(self, *, entity_ids: list[int] | None = None, is_completed: bool | None = None,
                   responsible: int | None = None, task_types: list[int] | None = None, updated_from: int | None = None,
                   order_desc: bool = False) -> list[dict[str, Any]]:
        found = [t for t in self.tasks.values() if (not entity_ids or t["entity_id"] in entity_ids)
                 and (is_completed is None or t["is_completed"] == is_completed)
                 and (responsible is None or t["responsible_user_id"] == responsible)
                 and (not task_types or t["task_type_id"] in task_types)
                 and (updated_from is None or t["updated_at"] >= updated_from)]
        return sorted(found, key=lambda t: t["id"], reverse=order_desc)

    # ---------------------------------------------------------------- reading
    def lead_fields(self, lead_id: int) -> dict[str, list[str]]:
        """Test helper: field name → values of a lead."""
        return {f["field_name"]: [v["value"] for v in f["values"]] for f in self.leads[lead_id]["fields"]}

    def contact_phones(self, contact_id: int) -> list[str]:
        return [v["value"] for f in self.contacts[contact_id]["fields"] if f["field_code"] == "PHONE" for v in f["values"]]

    def describe_lead(self, lead_id: int) -> str:
        """The lead card with its contact, tasks and notes, as a manager sees it in amoCRM."""
        lead = self.leads[lead_id]
        pipeline = self.pipelines[lead["pipeline_id"]]["name"]
        lines = [f"Сделка #{lead['id']} «{lead['name']}»",
                 f"  Воронка: {pipeline} → {self.status_name(lead['status_id'])}",
                 f"  Ответственный: {self.users.get(lead['responsible_user_id'], {}).get('name', '—')}"]
        lines += [f"  {name}: {', '.join(values)}" for name, values in self.lead_fields(lead_id).items()]
        if lead["tags"]:
            lines.append("  Теги: " + ", ".join(t["name"] for t in lead["tags"]))
        for contact_id in lead["contacts"]:
            contact = self.contacts[contact_id]
            values = [f"{f['field_name']}: {', '.join(v['value'] for v in f['values'])}" for f in contact["fields"]]
            lines.append(f"  Контакт #{contact_id}: {contact['name']}" + (f" ({'; '.join(values)})" if values else ""))
        tasks = self.find_tasks(entity_ids=[lead_id])
        if tasks:
            lines.append("  Задачи:")
            for task in tasks:
                mark = "x" if task["is_completed"] else " "
                due = self.local(task["complete_till"])
                who = self.users.get(task["responsible_user_id"], {}).get("name", "—")
                lines.append(f"    [{mark}] до {due} — {task['text']} ({who})")
        notes = self.find_notes(entity_ids=[lead_id])
        if notes:
            lines.append("  Примечания:")
            for note in notes:
                text = str(note["params"].get("text", "")).replace("\n", "\n      ")
                lines.append(f"    • {text}")
        return "\n".join(lines)


def _merge_fields(current: list[dict[str, Any]], changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Field values replace the field's previous values; other fields stay."""
    changed = {f["field_id"]: f for f in changes}
    return [changed.pop(f["field_id"], f) for f in current] + list(changed.values())
