"""Validation of a decoded Marquiz webhook (see :mod:`bot.bodies`) into a submission."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from bot.bodies import BadBody
from bot.phones import normalise_phone
from bot.texts import LANGUAGES


class BadPayload(BadBody):
    """The webhook body is not a Marquiz submission; the message says why."""


@dataclass(frozen=True)
class MarquizSubmission:
    name: str | None
    phone: str | None
    phone_raw: str | None
    email: str | None
    quiz_id: str | None
    quiz_name: str | None
    answers: list[tuple[str, list[str]]]
    utm: dict[str, str]
    extra: dict[str, Any]
    created: str | None
    language: str | None
    idempotency_key: str
    data: dict[str, Any] = field(repr=False)

    @property
    def source(self) -> str:
        return self.utm.get("source") or "marquiz"


def _text(value: Any, what: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, (str, int, float)):
        return str(value).strip()[:1000] or None
    raise BadPayload(f"{what} must be a string")


def _answers(raw: Any) -> list[tuple[str, list[str]]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise BadPayload("answers must be a list of {q, a}")
    answers = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or "q" not in item:
            raise BadPayload(f"answers[{index}] must be an object with q and a")
        question = _text(item["q"], f"answers[{index}].q") or ""
        value = item.get("a")
        values = value if isinstance(value, list) else [value]
        answers.append((question, [_text(v, f"answers[{index}].a") or "" for v in values if v not in (None, "")]))
    return answers


def parse_submission(data: dict[str, Any]) -> MarquizSubmission:
    """Validate a decoded Marquiz payload (``contacts``, ``quiz``, ``answers``, ``extra``, ``created``)."""
    contacts = data.get("contacts") or {}
    quiz = data.get("quiz") or {}
    extra = data.get("extra") or {}
    for name, value in (("contacts", contacts), ("quiz", quiz), ("extra", extra)):
        if not isinstance(value, dict):
            raise BadPayload(f"{name} must be an object")
    answers = _answers(data.get("answers"))
    phone_raw = _text(contacts.get("phone"), "contacts.phone")
    email = _text(contacts.get("email"), "contacts.email")
    name = _text(contacts.get("name"), "contacts.name")
    if not (phone_raw or email or name or answers):
        raise BadPayload("no contacts and no answers: not a quiz submission")
    utm_raw = extra.get("utm") or {}
    if not isinstance(utm_raw, dict):
        raise BadPayload("extra.utm must be an object")
    utm = {str(k): str(v) for k, v in utm_raw.items() if v not in (None, "") and isinstance(v, (str, int, float))}
    lang = _text(extra.get("lang"), "extra.lang")
    lang = lang.split("-")[0].lower() if lang else None
    created = _text(data.get("created"), "created")
    quiz_id = _text(quiz.get("id"), "quiz.id")
    if created:
        basis = [quiz_id, created, "".join(ch for ch in phone_raw or "" if ch.isdigit()), email]
    else:  # no timestamp: the whole payload identifies the submission
        basis = [json.dumps(data, sort_keys=True, ensure_ascii=False)]
    key = hashlib.sha256(json.dumps(basis, ensure_ascii=False).encode()).hexdigest()
    return MarquizSubmission(
        name=name,
        phone=normalise_phone(phone_raw),
        phone_raw=phone_raw,
        email=email,
        quiz_id=quiz_id,
        quiz_name=_text(quiz.get("name"), "quiz.name"),
        answers=answers,
        utm=utm,
        extra=extra,
        created=created,
        language=lang if lang in LANGUAGES else None,
        idempotency_key=key,
        data=data,
    )
