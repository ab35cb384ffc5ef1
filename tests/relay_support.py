"""Fixtures and helpers of the operator-chat tests: a forum group with managers, the operators file,
a lead with a known card, and managers acting in topics through the sandbox."""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from sqlalchemy import select

from bot.app import App
from bot.config import Settings
from bot.db.base import utcnow
from bot.db.models import Lead, LeadEvent, Message
from bot.relay import store
from bot.relay.models import RelayTopic
from bot.sandbox.telegram import TelegramSandbox
from tests.buyer import Buyer
from tests.conftest import make_settings, running  # noqa: F401  (re-exported for the relay tests)
from tests.crm_support import eventually  # noqa: F401  (re-exported for the relay tests)

OPERATORS = -1001234567890
IVAN, OLGA, PETR, STRANGER = 501, 502, 503, 599  # Petr is a member without an operators entry
OPERATORS_YAML = """
operators:
  - {tg_id: 501, name: Иван Смирнов, amocrm_user_id: 9001}
  - {tg_id: 502, name: Ольга Кузнецова, amocrm_user_id: 9002, head: true}
templates:
  hello:
    title: Приветствие
    text:
      ru: "{{ lead.first_name }}, здравствуйте! Я {{ manager.name }}. Ваши категории: {{ lead.categories | join(', ') }}."
      en: "Hello {{ lead.first_name }}, I'm {{ manager.name }}."
"""
Msg = dict[str, Any]
DETECTED = {"bot_command", "url", "mention", "hashtag", "cashtag", "email", "phone_number"}  # Telegram finds these itself


def markup(message: Msg) -> list[tuple[str, int, int]]:
    """The formatting a message was sent with (``(type, offset, length)``), not what Telegram detected in the text."""
    return [(e["type"], e["offset"], e["length"]) for e in message.get("entities", []) if e["type"] not in DETECTED]


class FakeClock:
    """An injectable UTC clock that only moves when told."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def set(self, moment: datetime) -> None:
        self.now = moment


def relay_settings(sandbox: TelegramSandbox, database_url: str, tmp_path: Path, *, forum: bool = True, **overrides: Any) -> Settings:
    """Settings with an operator chat (a forum by default) of Ivan, Olga (head of sales, admin) and Petr."""
    for user_id, first, last in ((IVAN, "Иван", "Смирнов"), (OLGA, "Ольга", "Кузнецова"), (PETR, "Пётр", "Новиков"),
                                 (STRANGER, "Чужой", None)):
        sandbox.add_user(user_id, first, last)
    sandbox.add_group(OPERATORS, "Оптовый отдел", forum=forum, members=[IVAN, PETR], admins=[OLGA])
    path = tmp_path / "operators.yaml"
    path.write_text(OPERATORS_YAML, encoding="utf-8")
    values: dict[str, Any] = {"OPERATOR_CHAT_ID": OPERATORS, "OPERATORS_CONFIG": path, "ADMIN_IDS": str(OLGA),
                              "WORKING_HOURS": "00:00-24:00", "WORKING_DAYS": "1-7", **overrides}
    return make_settings(sandbox, database_url, tmp_path, **values)


@pytest.fixture
def settings(sandbox: TelegramSandbox, database_url: str, tmp_path: Path) -> Settings:
    """Overrides the shared ``settings``: the app gets the operator chat."""
    return relay_settings(sandbox, database_url, tmp_path)


async def known_lead(app: App, buyer: Buyer, **fields: Any) -> Lead:
    """A lead who finished the quiz before (so free messages go to the managers)."""
    values: dict[str, Any] = {
        "tg_user_id": buyer.id, "first_name": "Анна", "last_name": "Петрова", "tg_username": "anna_opt",
        "phone": "+79991234567", "company": "ИП Петрова", "language": "ru", "stage": "qualified",
        "interests": {"category": ["shoes"], "volume": "100to300k", "channel": "marketplaces", "city": "Казань"},
        "source": "yandex", "utm": {"source": "yandex", "medium": "cpc", "campaign": "shoes"},
        "responsible_user_id": 9001, "crm_lead_id": 777, "greeted_at": utcnow(), "quiz_completed_at": utcnow(), **fields,
    }
    async with app.db.begin() as session:
        lead = Lead(**values)
        session.add(lead)
    return lead


async def topic_row(app: App, lead_id: int) -> RelayTopic | None:
    async with app.db() as session:
        return await session.get(RelayTopic, lead_id)


async def mapped(app: App, operator_message_id: int) -> bool:
    """The operator-chat message is in the message map (its buyer counterpart is known)."""
    async with app.db() as session:
        return await store.buyer_side(session, OPERATORS, operator_message_id) is not None


async def events(app: App, kind: str) -> list[LeadEvent]:
    async with app.db() as session:
        return list((await session.execute(select(LeadEvent).where(LeadEvent.kind == kind).order_by(LeadEvent.id))).scalars())


async def logged(app: App, **where: Any) -> list[Message]:
    async with app.db() as session:
        query = select(Message).filter_by(**where).order_by(Message.id)
        return list((await session.execute(query)).scalars())


THANKS = "Спасибо! Менеджер ответит вам здесь в ближайшее время."


class Opened(NamedTuple):
    thread: int  # the lead's topic
    card: Msg
    question: Msg  # the copy of the buyer's first question
    lead_id: int


async def open_topic(app: App, buyer: Buyer, team: Team, text: str = "Здравствуйте!", **lead: Any) -> Opened:
    """A known lead asks a question: the topic opens with the card and the question's copy (already in the message map)."""
    row = await known_lead(app, buyer, **lead)
    buyer.send(text)
    thread = await team.topic()
    card, question = await team.wait(thread, 2)
    assert (await buyer.reply())["text"] == THANKS
    await eventually(lambda: mapped(app, question["message_id"]))
    return Opened(thread, card, question, row.id)


class Team:
    """The operator chat as the tests see it: its topics, and managers writing in them."""

    def __init__(self, sandbox: TelegramSandbox) -> None:
        self.sandbox = sandbox

    async def topic(self, *, newer_than: int = 0, timeout: float = 10.0) -> int:
        """Wait for a topic's card (in a topic newer than ``newer_than``); returns the topic's thread id."""
        cards = await self.sandbox.wait_for_messages(
            OPERATORS, 1, timeout=timeout, predicate=lambda m: "📊" in m.get("text", "") and m["message_thread_id"] > newer_than)
        return cards[0]["message_thread_id"]

    def bot_messages(self, thread_id: int | None = None) -> list[Msg]:
        return self.sandbox.messages(OPERATORS, thread_id=thread_id, from_bot=True)

    async def wait(self, thread_id: int | None, count: int, timeout: float = 10.0) -> list[Msg]:
        """The bot's first ``count`` messages in the topic (the card is the first)."""
        return await self.sandbox.wait_for_messages(OPERATORS, count, thread_id=thread_id, timeout=timeout)

    def say(self, manager: int, thread_id: int | None, text: str, *, reply_to: Msg | int | None = None) -> Msg:
        return self.sandbox.send_text(manager, text, chat_id=OPERATORS, message_thread_id=thread_id, reply_to=reply_to)

    def send(self, manager: int, thread_id: int | None, kind: str, **fields: Any) -> Msg:
        return self.sandbox.send_media(manager, kind, chat_id=OPERATORS, message_thread_id=thread_id, **fields)


@pytest.fixture
def team(sandbox: TelegramSandbox) -> Team:
    return Team(sandbox)


