"""Operator-chat tables: a lead's topic, the relayed-message map, the waits for a manager's reply."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from bot.db.base import Base, utcnow


class RelayTopic(Base):
    """A lead's conversation in the operator chat: its forum topic (``thread_id``) and lead card.

    Without topics (the reply mode) ``thread_id`` stays empty and managers answer by replying.
    A row without ``card_message_id`` is a topic still to be created (``TOPIC_ON_ARRIVAL``).
    """

    __tablename__ = "relay_topics"
    __table_args__ = (Index("ix_relay_topics_chat_id_thread_id", "chat_id", "thread_id", unique=True),)

    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), primary_key=True, autoincrement=False)
    chat_id: Mapped[int]
    thread_id: Mapped[int | None]
    card_message_id: Mapped[int | None]
    name: Mapped[str] = mapped_column(String(128), default="")
    card_hash: Mapped[str] = mapped_column(String(64), default="")
    is_closed: Mapped[bool] = mapped_column(default=False)
    stale: Mapped[bool] = mapped_column(default=False)  # a lead event happened: the card may be out of date
    lease_until: Mapped[datetime | None]  # a relay worker's round is creating or refreshing it: other instances leave it
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class RelayLink(Base):
    """One relayed message: the message in the buyer's chat and its counterpart in the operator chat."""

    __tablename__ = "relay_links"
    __table_args__ = (
        Index("ix_relay_links_buyer_chat_id_buyer_message_id", "buyer_chat_id", "buyer_message_id"),
        Index("ix_relay_links_operator_chat_id_operator_message_id", "operator_chat_id", "operator_message_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    direction: Mapped[str] = mapped_column(String(3))  # "in": buyer → operators, "out": manager → buyer
    buyer_chat_id: Mapped[int]
    buyer_message_id: Mapped[int]
    operator_chat_id: Mapped[int]
    operator_message_id: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RelayWait(Base):
    """A buyer waiting for a manager: from the first unanswered message to the first reply.

    ``due_at``/``escalate_at`` are the two SLA deadlines in working time; ``level`` is how many
    pings were sent (claimed with a compare-and-set, so each is sent once). An answered wait is
    the first-response record of its lead and manager; a dismissed one (topic closed, buyer
    banned) has no response time.
    """

    __tablename__ = "relay_waits"
    __table_args__ = (
        Index("ix_relay_waits_open_lead_id", "lead_id", unique=True, sqlite_where=text("closed_at IS NULL"),
              postgresql_where=text("closed_at IS NULL")),
        Index("ix_relay_waits_closed_at", "closed_at"),
        Index("ix_relay_waits_started_at", "started_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    started_at: Mapped[datetime]
    in_hours: Mapped[bool | None]  # the question came within working hours
    due_at: Mapped[datetime]
    escalate_at: Mapped[datetime]
    level: Mapped[int] = mapped_column(default=0)
    closed_at: Mapped[datetime | None]  # answered or dismissed
    answered_by: Mapped[int | None]  # the manager's Telegram id
    answered_by_name: Mapped[str | None] = mapped_column(String(256))
    response_seconds: Mapped[int | None]  # working seconds from started_at to the answer
    dismissed: Mapped[bool] = mapped_column(default=False)


class RelayPost(Base):
    """A post waiting for its turn in an operator group (:mod:`.pacer`, which owns the table's queries).

    ``kind`` ``message``: a buyer's message to copy into the lead's topic (``payload``: the
    :class:`bot.inbound.Inbound`); ``notice``: a text from the bot (``payload``: ``{"text": html}``).
    Urgent posts (a new lead, a first question, an SLA ping) go before the rest. A post is leased
    (``owner``, ``lease_until``) while it is being posted and deleted once it is.
    """

    __tablename__ = "relay_posts"
    __table_args__ = (Index("ix_relay_posts_chat_id_urgent_id", "chat_id", "urgent", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    chat_id: Mapped[int]  # the operator group
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    urgent: Mapped[bool] = mapped_column(default=False)
    payload: Mapped[dict[str, Any]]
    owner: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
