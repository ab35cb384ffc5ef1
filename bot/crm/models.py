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

LEAD, NOTE, TASK, MERGE, CHAT = "lead", "note", "task", "merge", "chat"


class OutboxItem(Base):
    __tablename__ = "crm_outbox"
    __table_args__ = (
        Index("ix_crm_outbox_lead_id_id", "lead_id", "id"),
        Index("ix_crm_outbox_state_next_attempt_at", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    op: Mapped[str] = mapped_column(String(16))  # "lead" | "note" | "task" | "merge" | "chat" (the amoCRM chat)
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


class AmojoChat(Base):
    """A buyer's amoCRM chat (the Chats API): created once, linked to their amoCRM contact before its first message."""

    __tablename__ = "amojo_chats"

    conversation_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "tg-<Telegram user id>"
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    chat_id: Mapped[str | None] = mapped_column(String(64))  # amoCRM's chat id
    user_id: Mapped[str | None] = mapped_column(String(64))  # amoCRM's id of the buyer in the chat
    contact_id: Mapped[int | None]  # the amoCRM contact the chat is linked to
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AmojoReply(Base):
    """A manager's reply from amoCRM (the Chats API hook), kept before it is answered and delivered from here.

    States: ``pending`` → ``sending`` (claimed) → ``done`` | ``failed`` (the buyer cannot be reached: reason kept).
    """

    __tablename__ = "amojo_replies"
    __table_args__ = (Index("ix_amojo_replies_state_next_attempt_at", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(64), unique=True)  # amoCRM's message id: a repeated hook is one reply
    conversation_id: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the hook's "message"
    state: Mapped[str] = mapped_column(String(16), default=PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    claimed_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    send_id: Mapped[int | None]  # the send outbox record of its text (tg_sends): a later try takes its outcome, never sends again
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    done_at: Mapped[datetime | None]
