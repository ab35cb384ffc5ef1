"""Texts managers read in amoCRM: notes, tasks, lead names (``bot/texts/crm.<lang>.yaml``), with markers.

Every note and task ends with the marker ``#ob<outbox id>`` and every lead name with
``#L<lead id>``: after a crash the worker finds what it already sent by these markers.
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Any
from zoneinfo import ZoneInfo

from bot.crm.discovery import AccountMap
from bot.db.models import Lead, Message
from bot.quiz import Quiz
from bot.texts import raw


def item_marker(item_id: int) -> str:
    return f"#ob{item_id}"


def lead_marker(lead_id: int) -> str:
    return f"#L{lead_id}"


def has_marker(text: str | None, marker: str) -> bool:
    return bool(text) and re.search(re.escape(marker) + r"\s*$", text) is not None


def is_bot_lead(name: str | None) -> bool:
    """Whether a deal's name says the bot created it (ends with a ``#L<lead id>`` marker)."""
    return bool(name) and re.search(r"#L\d+\s*$", name) is not None


class Composer:
    def __init__(self, language: str, quiz: Quiz, tz: ZoneInfo) -> None:
        self.lang = language
        self.quiz = quiz
        self.tz = tz  # TIMEZONE until the account's own is known: managers read times in it

    def follow(self, account: AccountMap) -> None:
        """Write times in the account's time zone, as amoCRM shows everything else."""
        if account.timezone is not None:
            self.tz = account.timezone

    def text(self, key: str, **values: Any) -> str:
        """``crm.<key>`` in the managers' language; missing values are left blank."""
        return str(raw(self.lang, f"crm.{key}")).format_map(defaultdict(str, {k: "" if v is None else v for k, v in values.items()}))

    def buyer(self, lead: Lead) -> str:
        return " ".join(p for p in (lead.first_name, lead.last_name) if p) or (f"@{lead.tg_username}" if lead.tg_username else self.text("unnamed"))

    def lead_name(self, lead: Lead) -> str:
        return f"{self.text('lead_name', name=self.buyer(lead))} {lead_marker(lead.id)}"

    def telegram(self, lead: Lead) -> str | None:
        if lead.tg_user_id is None:
            return None
        key = "telegram" if lead.tg_username else "telegram_no_username"
        return self.text(key, username=lead.tg_username, id=lead.tg_user_id)

    def message_note(self, message: Message) -> str:
        who = self.text(f"author.{message.author}") if message.author in ("buyer", "bot", "manager", "broadcast") else message.author
        name = f" ({message.author_name})" if message.author_name and message.author in ("buyer", "manager") else ""
        body = message.text or ""
        if message.kind != "text":
            file_name = (message.meta or {}).get("file_name")
            marker = self.text("attachment", kind=self._kind(message.kind), file=f": {file_name}" if file_name else "")
            body = f"{marker}\n{body}" if body else marker
        return self.text(
            "message", who=who, name=name, time=message.created_at.astimezone(self.tz).strftime("%d.%m %H:%M"),
            internal=self.text("internal") if message.is_internal else "", text=body,
        )

    def _kind(self, kind: str) -> str:
        try:
            return str(raw(self.lang, f"crm.kinds.{kind}"))
        except KeyError:
            return kind

    def event_note(self, note: str, lead: Lead, data: dict[str, Any]) -> str:
        if note == "quiz":
            return self.text("note.quiz", via=data.get("via", ""), answers="\n".join(self._answers(data)))
        return self.text(f"note.{note}", **{"phone": lead.phone, **data})

    def _answers(self, data: dict[str, Any]) -> list[str]:
        """The quiz as asked: Marquiz questions verbatim, or the in-bot questions with their labels."""
        def joined(answer: Any) -> str:
            return ", ".join(map(str, answer)) if isinstance(answer, list) else str(answer)

        if data.get("answers"):
            lines = [self.text("note.quiz_line", q=item.get("q"), a=joined(item.get("a"))) for item in data["answers"]]
        else:
            interests = data.get("interests") or {}
            lines = [
                self.text("note.quiz_line", q=question.label(self.lang), a=", ".join(self.quiz.labels_of(question.key, interests, self.lang)))
                for question in self.quiz.questions if interests.get(question.key)
            ]
            lines += [self.text("note.quiz_unknown", q=item.get("q"), a=joined(item.get("a"))) for item in data.get("unknown") or []]
        return lines

    def task(self, kind: str, lead: Lead, data: dict[str, Any]) -> str:
        values = {"phone": lead.phone or "", "city": (lead.interests or {}).get("city", ""), **data, "name": self.buyer(lead)}
        return self.text(f"task.{kind}", **values)
