"""Core tables: leads, quiz submissions, the conversation log, lead events, catalogue renders.

Feature packages keep their own tables in their own ``models`` module (``bot/crm/models.py``,
``bot/relay/models.py``, ``broadcasts/models.py``) on the same :class:`Base`.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from bot.db.base import Base, JSONType, utcnow

# How a lead first reached the bot (``Lead.arrival``): the website quiz and its personal link, an ad
# deep link with UTM-style payload, a website quiz found by the phone shared in the bot, or /start alone.
QUIZ, AD, PHONE, COLD = "quiz", "ad", "phone", "cold"
ARRIVALS = (QUIZ, AD, PHONE, COLD)


class Lead(Base):
    """A buyer: Telegram identity, contacts, quiz interests, source, funnel stage, flags, CRM ids."""

    __tablename__ = "leads"
    __table_args__ = (Index("ix_leads_created_at", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    tg_user_id: Mapped[int | None] = mapped_column(unique=True)
    tg_username: Mapped[str | None] = mapped_column(String(64))
    first_name: Mapped[str | None] = mapped_column(String(128))
    last_name: Mapped[str | None] = mapped_column(String(128))
    company: Mapped[str | None] = mapped_column(String(256))
    phone: Mapped[str | None] = mapped_column(String(32), index=True)
    # The phone is only what the buyer typed in the bot (not a website quiz's, nor their own shared contact):
    # it never links them to a website quiz, and a website quiz is never filed under it.
    phone_typed: Mapped[bool] = mapped_column(default=False)
    email: Mapped[str | None] = mapped_column(String(256))
    language: Mapped[str] = mapped_column(String(8), default="ru")
    # Normalised quiz answers: {"category": ["shoes"], "volume": "100to300k", "channel": "...", "city": "Казань"}
    interests: Mapped[dict[str, Any]] = mapped_column(default=dict)
    source: Mapped[str | None] = mapped_column(String(128))
    utm: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tags: Mapped[list[str]] = mapped_column(default=list)
    stage: Mapped[str] = mapped_column(String(64), default="new", index=True)
    # Where the in-bot flow stands (quiz step, test-batch form): survives restarts.
    flow: Mapped[dict[str, Any]] = mapped_column(default=dict)
    is_blocked: Mapped[bool] = mapped_column(default=False)
    is_banned: Mapped[bool] = mapped_column(default=False)
    unsubscribed_at: Mapped[datetime | None]
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"))
    crm_lead_id: Mapped[int | None] = mapped_column(index=True)
    crm_contact_id: Mapped[int | None]
    crm_status_id: Mapped[int | None]
    crm_pipeline_id: Mapped[int | None]
    responsible_user_id: Mapped[int | None]
    deal_price: Mapped[int | None]  # the amoCRM deal's budget (₽), read back on webhooks and reconcile
    no_task_since: Mapped[datetime | None]  # amoCRM showed the open deal without an open task at the last check
    arrival: Mapped[str | None] = mapped_column(String(8))  # one of ARRIVALS
    furthest_stage: Mapped[str | None] = mapped_column(String(64))  # the furthest funnel stage ever reached (bot.funnel)
    key_stage_at: Mapped[datetime | None]  # when it first reached the key stage or beyond
    first_reply_ms: Mapped[int | None]  # from the buyer's first /start to the bot's greeting sent
    quiz_completed_at: Mapped[datetime | None]
    greeted_at: Mapped[datetime | None]
    catalog_sent_at: Mapped[datetime | None]
    test_batch_requested_at: Mapped[datetime | None]
    awaiting_reply_since: Mapped[datetime | None]  # a buyer question no manager has answered yet
    last_inbound_at: Mapped[datetime | None]
    last_outbound_at: Mapped[datetime | None]
    last_broadcast_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def display_name(self) -> str:
        return " ".join(part for part in (self.first_name, self.last_name) if part) or (self.tg_username or f"#{self.id}")


class QuizSubmission(Base):
    """A quiz as it arrived (Marquiz webhook or in-bot), kept verbatim, linked to its lead."""

    __tablename__ = "quiz_submissions"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(16))  # "marquiz" | "bot"
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    token: Mapped[str | None] = mapped_column(String(64), unique=True)
    raw_body: Mapped[str] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(String(128), default="application/json")
    answers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    unknown: Mapped[list[Any]] = mapped_column(default=list)
    phone: Mapped[str | None] = mapped_column(String(32), index=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    claimed_by_tg_user_id: Mapped[int | None]
    claimed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Message(Base):
    """The conversation log: every message in and out, with author and Telegram ids."""

    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_lead_id_id", "lead_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    direction: Mapped[str] = mapped_column(String(3))  # "in" | "out"
    author: Mapped[str] = mapped_column(String(16))  # "buyer" | "bot" | "manager" | "broadcast"
    author_name: Mapped[str | None] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(32), default="text")
    text: Mapped[str | None] = mapped_column(Text)
    tg_chat_id: Mapped[int | None]
    tg_message_id: Mapped[int | None]
    is_internal: Mapped[bool] = mapped_column(default=False)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LeadEvent(Base):
    """A funnel event (quiz completed, catalogue sent, test batch requested…) in order of occurrence."""

    __tablename__ = "lead_events"
    __table_args__ = (
        Index("ix_lead_events_lead_id_id", "lead_id", "id"),
        Index("ix_lead_events_kind_created_at", "kind", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TestBatchRequest(Base):
    """What a manager needs to ship a test batch."""

    __tablename__ = "test_batch_requests"
    __test__ = False  # not a pytest class

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    assortment: Mapped[str] = mapped_column(Text)
    city: Mapped[str] = mapped_column(String(128))
    phone: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CatalogRender(Base):
    """A rendered catalogue: personalisation key → file, and its Telegram ``file_id`` once uploaded."""

    __tablename__ = "catalog_renders"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    path: Mapped[str] = mapped_column(String(512))
    file_id: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class KeyValue(Base):
    """Small durable facts (the bot's username, token pairs…) shared between instances."""

    __tablename__ = "kv"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class TgUpdate(Base):
    """A Telegram update as it arrived (the durable inbox): stored before Telegram is told it arrived,
    handed to one instance at a time by a lease, marked handled once its handler has run (:mod:`bot.inbox`)."""

    __tablename__ = "tg_updates"
    __table_args__ = (Index("ix_tg_updates_handled_at_lease_until", "handled_at", "lease_until"),
                      Index("ix_tg_updates_chat_id_update_id", "chat_id", "update_id"))

    update_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    chat_id: Mapped[int | None]  # the lane: one chat's updates are handled one at a time, in update_id order
    raw: Mapped[str] = mapped_column(Text)  # the update as JSON
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    handled_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)  # times an instance took it to handle
    error: Mapped[str | None] = mapped_column(Text)  # the last handler failure
    owner: Mapped[str | None] = mapped_column(String(32))  # the instance holding the lease
    lease_until: Mapped[datetime | None]


class TelegramWebhook(Base):
    """The Telegram webhook's secret token (one row): random, made by the first instance that needs it, registered
    by the elected receiver (:mod:`bot.receiver`) and checked by every instance."""

    __tablename__ = "telegram_webhook"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)  # always 1
    secret_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TgSend(Base):
    """A message to a buyer that must outlive a Telegram outage or a restart (the send outbox, :mod:`bot.sender`).

    ``state``: ``sending`` (may be in flight), ``waiting`` (the last try surely failed; next at ``not_before``),
    ``sent``, ``failed`` (refused for good, or the retry window ran out) or ``unknown`` (in flight when its
    instance died, of a kind that is not repeated then)."""

    __tablename__ = "tg_sends"
    __table_args__ = (Index("ix_tg_sends_state_lease_until", "state", "lease_until"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # greeting | catalogue | relay | service (bot.sender.REPEATED_WHEN_UNKNOWN)
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    chat_id: Mapped[int]
    text: Mapped[str] = mapped_column(Text)
    reply_markup: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    state: Mapped[str] = mapped_column(String(8), default="sending")
    attempts: Mapped[int] = mapped_column(default=0)
    not_before: Mapped[datetime | None]
    deadline: Mapped[datetime]  # retried until then (SEND_RETRY_FOR after it was created)
    owner: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    tg_message_id: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]


class Instance(Base):
    """A running ``optobot run`` process: its heartbeat (``seen_at``) tells the others it is alive."""

    __tablename__ = "instances"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    role: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
