"""Tables of broadcasts and warm-up sequences (all their queries live in :mod:`broadcasts.store`).

* ``broadcasts`` — a one-off campaign, or one step of a sequence (``kind="step"``): its
  segment, content, state, schedule and the sender's lease (``owner`` until ``lease_until``).
* ``broadcast_deliveries`` — one row per (broadcast, lead): the crash-safe record of
  delivery. ``pending`` → ``sending`` (written before the Bot API call) → ``sent`` /
  ``blocked`` / ``failed``; a row found ``sending`` when a sender takes over becomes
  ``unknown`` (it may or may not have arrived) and is never sent again. A lead of the
  holdout (control group) gets a ``holdout`` row instead, stamped when sending starts.
* ``broadcast_clicks`` — tracked button presses, one per (delivery, button).
* ``sequence_enrollments`` — a lead in a warm-up sequence, once per (sequence, lead).
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bot.db.base import Base, utcnow

# Broadcast states (listmonk's)
DRAFT, SCHEDULED, RUNNING, PAUSED, CANCELLED, FINISHED = "draft", "scheduled", "running", "paused", "cancelled", "finished"
ONEOFF, STEP = "oneoff", "step"

# Delivery states (HOLDOUT: kept out of the broadcast to measure it against; never sent, its variant is HOLDOUT too)
PENDING, SENDING, SENT, BLOCKED, FAILED, UNKNOWN, SKIPPED = "pending", "sending", "sent", "blocked", "failed", "unknown", "skipped"
HOLDOUT = "holdout"
DELIVERY_STATES = (PENDING, SENDING, SENT, BLOCKED, FAILED, UNKNOWN, SKIPPED, CANCELLED, HOLDOUT)

# Enrollment states
ACTIVE, DONE, EXITED = "active", "done", "exited"


class Broadcast(Base):
    __tablename__ = "broadcasts"
    __table_args__ = (UniqueConstraint("sequence", "step"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(8), default=ONEOFF)
    state: Mapped[str] = mapped_column(String(16), default=DRAFT, index=True)
    segment: Mapped[dict[str, Any]] = mapped_column(default=dict)  # broadcasts.segments.Segment
    content: Mapped[dict[str, Any]] = mapped_column(default=dict)  # broadcasts.content.Content
    send_at: Mapped[datetime | None]
    quiet_hours: Mapped[bool] = mapped_column(default=True)
    sequence: Mapped[str | None] = mapped_column(String(64))
    step: Mapped[str | None] = mapped_column(String(64))
    # Materialisation of the recipients: a keyset checkpoint over leads.id, up to a snapshot.
    prepared: Mapped[bool] = mapped_column(default=False)
    prepared_upto: Mapped[int] = mapped_column(default=0)
    max_lead_id: Mapped[int | None]
    total: Mapped[int] = mapped_column(default=0)
    owner: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None]
    note: Mapped[str | None] = mapped_column(Text)  # why it paused, or why validation refused it
    errors: Mapped[list[Any]] = mapped_column(default=list)
    created_by: Mapped[int | None]
    progress_chat_id: Mapped[int | None]
    progress_message_id: Mapped[int | None]
    progress_owner: Mapped[str | None] = mapped_column(String(32))  # the instance that edits the progress message …
    progress_until: Mapped[datetime | None]  # … until then (renewed by each edit; another takes over after it)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Delivery(Base):
    __tablename__ = "broadcast_deliveries"
    __table_args__ = (
        UniqueConstraint("broadcast_id", "lead_id"),
        Index("ix_broadcast_deliveries_queue", "broadcast_id", "state", "id"),
        Index("ix_broadcast_deliveries_due", "broadcast_id", "state", "due_at"),
        Index("ix_broadcast_deliveries_lead_sent", "lead_id", "sent_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    broadcast_id: Mapped[int] = mapped_column(ForeignKey("broadcasts.id", ondelete="CASCADE"))
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    variant: Mapped[str] = mapped_column(String(16), default="A")
    state: Mapped[str] = mapped_column(String(16), default=PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    due_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    tg_message_id: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    # Attribution, set by the journal subscriber: a reply within 48 h, an opt-out within 48 h,
    # the lead reaching the conversion stage within 7 days.
    replied_at: Mapped[datetime | None]
    unsubscribed_at: Mapped[datetime | None]
    converted_at: Mapped[datetime | None]


class Click(Base):
    __tablename__ = "broadcast_clicks"
    __table_args__ = (UniqueConstraint("delivery_id", "button"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("broadcast_deliveries.id", ondelete="CASCADE"))
    button: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Enrollment(Base):
    __tablename__ = "sequence_enrollments"
    __table_args__ = (
        UniqueConstraint("sequence", "lead_id"),
        Index("ix_sequence_enrollments_due", "sequence", "state", "entered_at"),
        Index("ix_sequence_enrollments_lead_id", "lead_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    sequence: Mapped[str] = mapped_column(String(64))
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16), default=ACTIVE)
    entered_at: Mapped[datetime] = mapped_column(default=utcnow)
    exit_reason: Mapped[str | None] = mapped_column(String(32))
    exited_at: Mapped[datetime | None]
