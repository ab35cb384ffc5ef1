"""The amoCRM outbox: one row per CRM operation, written in the transaction of the event that causes it.

States: ``pending`` → ``sending`` (claimed by a worker) → ``done``; on a transient error
``retry`` (with ``next_attempt_at`` and ``last_error``); on amoCRM's refusal ``failed``.
``uncertain`` marks an item that may have reached amoCRM already: it is looked up there
before it is sent again. A ``merge`` folds the buyer's duplicate deals and contacts into one (``bot/crm/merge.py``). (The access/refresh token pair and small sync facts live in ``kv``.)
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from bot.db.base import Base, utcnow

PENDING, SENDING, RETRY, DONE, FAILED = "pending", "sending", "retry", "done", "failed"
UNFINISHED = (PENDING, SENDING, RETRY)
READY = (PENDING, RETRY)

LEAD, NOTE, TASK, MERGE = "lead", "note", "task", "merge"


class OutboxItem(Base):
    __tablename__ = "crm_outbox"
    __table_args__ = (
        Index("ix_crm_outbox_lead_id_id", "lead_id", "id"),
        Index("ix_crm_outbox_state_next_attempt_at", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    op: Mapped[str] = mapped_column(String(16))  # "lead" | "note" | "task" | "merge"
    key: Mapped[str | None] = mapped_column(String(64))  # note or task kind
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16), default=PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    uncertain: Mapped[bool] = mapped_column(default=False)
    next_attempt_at: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    done_at: Mapped[datetime | None]
