"""The follow-ups table: one row per message the bot owes a buyer, due at a time, claimed through the database."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from bot.db.base import Base, utcnow

PENDING, SENDING, DONE, SKIPPED, CANCELLED, FAILED = "pending", "sending", "done", "skipped", "cancelled", "failed"
STAGE = "stage"  # a stage message
SURVEY = "survey"  # the feedback survey after the test batch
NUDGE = "nudge"  # a "propose the main batch" task when a happy buyer has not ordered
REMINDER = "reminder"  # a manager's reminder to the buyer (``/remind`` in the lead's topic)
ASK = "ask"  # data a stage requires from the buyer (``requires:`` in STAGE_MESSAGES)
REORDER = "reorder"  # the offer to order again, before the buyer's expected reorder


class FollowUp(Base):
    """A message due to a buyer. ``key`` is unique: a stage message is ``stage:<deal>:<stage>``, so a stage entered
    twice or a webhook delivered twice adds nothing. A ``sending`` row whose lease ran out (its instance died) is
    claimed again; the conversation log tells whether it went out."""

    __tablename__ = "followups"
    __table_args__ = (Index("ix_followups_state_due_at", "state", "due_at"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(160), unique=True)
    stage: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)  # e.g. the deal's amoCRM fields at the stage move
    state: Mapped[str] = mapped_column(String(16), default=PENDING)
    due_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    reason: Mapped[str | None] = mapped_column(String(256))  # why skipped or cancelled, the last error
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
