"""Messages to buyers that outlive a Telegram outage or a restart: the send outbox (``tg_sends``).

A message is recorded (``stage``, in the caller's transaction when it has one) before it is sent, then sent at
once by the same instance. What happens when Telegram does not take it:

- **429 Too Many Requests**: waited out for exactly ``retry_after`` and repeated (it was not executed);
- **5xx, an unreadable answer, a connection that could not be made**: tried again after 0.5, 1, 2 … s (at most
  30 s apart) until ``SEND_RETRY_FOR`` (10 minutes) after the message was recorded, then given up (``failed``);
- **a final refusal** (403 blocked, 400 chat not found, bad markup): stops at once; an unreachable buyer is
  flagged by :class:`bot.messenger.Messenger`, the one place that knows how;
- **outcome unknown** (a timeout or a dropped connection after the request left, or the instance died while it
  was in flight): repeated for catalogue and service messages (a second copy does no harm), NOT for greetings
  and relayed messages (the buyer may have it; a duplicate in a conversation is worse): those become ``unknown``.

Calls made by an update's handler (a catalogue document, a manager's answer copied to the buyer) follow the same
rules through :meth:`Sender.call` without a record: the durable inbox is their record, and handles the update again
if the instance dies.

Pending messages of an instance that died are taken over (after their lease ran out) by the :attr:`Sender.resume`
loop of any instance, one chat's messages in order.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import aiohttp
import structlog
from aiogram import Bot
from aiogram.exceptions import ClientDecodeError, TelegramNetworkError, TelegramRetryAfter, TelegramServerError
from aiogram.methods import SendMessage, TelegramMethod
from aiogram.types import Message
from pydantic import BaseModel

from bot.db import sends
from bot.db.base import utcnow
from bot.db.models import TgSend
from bot.db.session import Database
from bot.loops import Loop
from bot.telegram import call_once

log = structlog.get_logger(__name__)
T = TypeVar("T")

GREETING, CATALOGUE, RELAY, SERVICE = "greeting", "catalogue", "relay", "service"
#: Whether a message whose outcome is unknown is sent again (see the module's docstring).
REPEATED_WHEN_UNKNOWN = {GREETING: False, CATALOGUE: True, RELAY: False, SERVICE: True}
LEASE = 10.0  # seconds an instance holds the sends it is working on; renewed while it does
MAX_PAUSE = 30.0  # the longest pause between two tries after a 5xx or network error
CLAIM_BATCH = 100
KEEP_SETTLED = timedelta(days=7)  # a send sent, failed or unknown is kept this long (inspection), then deleted
PRUNE_EVERY = 600.0  # seconds between two such deletions


@dataclass
class Outgoing:
    """A recorded message, ready to send."""

    id: int
    kind: str
    lead_id: int | None
    chat_id: int
    text: str
    reply_markup: dict[str, Any] | None
    deadline: datetime

    @classmethod
    def of(cls, row: TgSend) -> Outgoing:
        return cls(row.id, row.kind, row.lead_id, row.chat_id, row.text, row.reply_markup, row.deadline)


#: Records a send's change of state (``{"state": …, …}``).
Note = Callable[[dict[str, Any]], Awaitable[None]]


async def _unrecorded(change: dict[str, Any]) -> None:
    """An unrecorded call's changes of state are only logged."""


class Unknown(Exception):
    """The send may or may not have reached the buyer, and its kind is not repeated."""


class GaveUp(Exception):
    """Telegram did not take the message within ``SEND_RETRY_FOR``."""


def not_sent(exc: TelegramNetworkError) -> bool:
    """Whether a network error surely left the request unsent (the connection was never made)."""
    return isinstance(exc.__cause__, aiohttp.ClientConnectorError)


def in_flight(rows: Sequence[Any]) -> list[Any]:
    """Of a dead instance's pending sends (``id, state, chat_id`` in id order), those that may have been in flight
    when it died: a chat's messages go out one at a time, so only each chat's first, if it was ``sending``
    (the ones after it were never tried)."""
    first: dict[int, Any] = {}
    for row in rows:
        first.setdefault(row.chat_id, row)
    return [row for row in first.values() if row.state == "sending"]


#: Called for a message the resume loop delivered (log it) or that Telegram refused for good (flag the buyer).
Delivered = Callable[[Outgoing, Message], Awaitable[None]]
Refused = Callable[[Outgoing, Exception], Awaitable[None]]


class Sender:
    """Records, sends and retries messages to buyers (see the module's docstring for the rules)."""

    def __init__(self, bot: Bot, db: Database, *, retry_for: float, lease: float = LEASE) -> None:
        self.bot = bot
        self.db = db
        self.retry_for = retry_for
        self.lease = lease
        self.owner = uuid.uuid4().hex
        self.resume = Loop("sender.resume", self._resume_round, every=1.0)
        self.delivered: Delivered | None = None
        self.refused: Refused | None = None
        self._mine: set[int] = set()
        self._renewed = 0.0
        self._pruned = 0.0
        self._changes: list[dict[str, Any]] = []
        self._writing: asyncio.Task[None] | None = None
        self._resuming: set[asyncio.Task[None]] = set()

    async def stage(self, session: Any, lead_id: int | None, chat_id: int, items: Sequence[tuple[str, Any]], kind: str) -> list[Outgoing]:
        """Record ``items`` (text, reply markup) for ``chat_id`` in ``session``'s transaction, to be sent by :meth:`send`."""
        now = utcnow()
        deadline = now + timedelta(seconds=self.retry_for)
        rows = [{"kind": kind, "lead_id": lead_id, "chat_id": chat_id, "text": text, "deadline": deadline, "created_at": now,
                 "reply_markup": markup.model_dump(mode="json", exclude_none=True) if isinstance(markup, BaseModel) else markup}
                for text, markup in items]
        ids = await sends.stage(session, rows, self.owner, now + timedelta(seconds=self.lease))
        self._mine.update(ids)
        return [Outgoing(row_id, kind, lead_id, chat_id, row["text"], row["reply_markup"], deadline) for row_id, row in zip(ids, rows)]

    async def send(self, out: Outgoing) -> Message:
        """Send a recorded message, through outages, by the rules; :class:`Unknown`, :class:`GaveUp` or the
        final Telegram error when it was not delivered."""
        try:
            return await self._send(out)
        finally:
            self._mine.discard(out.id)

    async def _send(self, out: Outgoing) -> Message:
        async def note(change: dict[str, Any]) -> None:
            await self._write({"id": out.id, **change})

        method = SendMessage(chat_id=out.chat_id, text=out.text, reply_markup=out.reply_markup)
        message, attempts = await self._attempts(method, out.kind, out.deadline, note, send_id=out.id)
        self._later({"id": out.id, "state": "sent", "attempts": attempts, "tg_message_id": message.message_id,
                     "sent_at": utcnow(), "error": None})
        return message

    async def call(self, method: TelegramMethod[T], kind: str) -> T:
        """One Bot API call by ``kind``'s rules, not recorded: for a call made by an update's handler (a catalogue, a
        manager's answer), which the durable inbox runs again if the instance dies (the update is the record)."""
        result, _ = await self._attempts(method, kind, utcnow() + timedelta(seconds=self.retry_for), _unrecorded)
        return result

    async def _attempts(self, method: TelegramMethod[T], kind: str, deadline: datetime, note: Note,
                        send_id: int | None = None) -> tuple[T, int]:
        """Make ``method`` by the rules (see the module's docstring); ``note`` records each change of state.
        The result and how many tries it took."""
        attempt = 0
        name = type(method).__name__
        while True:
            attempt += 1
            try:
                return await call_once(self.bot, method), attempt
            except TelegramRetryAfter as exc:
                pause, error = float(exc.retry_after), f"429 retry after {exc.retry_after}"
            except (TelegramServerError, ClientDecodeError) as exc:
                pause, error = min(0.5 * 2 ** (attempt - 1), MAX_PAUSE), f"{type(exc).__name__}: {exc}"
            except TelegramNetworkError as exc:
                pause, error = min(0.5 * 2 ** (attempt - 1), MAX_PAUSE), f"{type(exc).__name__}: {exc}"
                if not not_sent(exc) and not REPEATED_WHEN_UNKNOWN[kind]:
                    await note({"state": "unknown", "attempts": attempt, "error": error})
                    log.warning("send.outcome_unknown", send_id=send_id, method=name, kind=kind, error=error)
                    raise Unknown(error) from exc
            except Exception as exc:  # refused for good: 403 blocked, 400 chat not found, bad markup…
                await note({"state": "failed", "attempts": attempt, "error": f"{type(exc).__name__}: {exc}"})
                raise
            retry_at = utcnow() + timedelta(seconds=pause)
            if retry_at > deadline:
                await note({"state": "failed", "attempts": attempt, "error": f"gave up: {error}"})
                log.error("send.gave_up", send_id=send_id, method=name, kind=kind, attempts=attempt, error=error)
                raise GaveUp(error)
            log.warning("send.retry", send_id=send_id, method=name, kind=kind, attempt=attempt, retry_in=pause, error=error)
            await note({"state": "waiting", "attempts": attempt, "not_before": retry_at, "error": error})
            await asyncio.sleep(pause)
            await note({"state": "sending"})

    # ------------------------------------------------------------ writes
    async def _write(self, change: dict[str, Any]) -> None:
        async with self.db.begin() as session:
            await sends.settle(session, [change])

    def _later(self, change: dict[str, Any]) -> None:
        """Write ``change`` soon: changes made while a batch is being written go into the next one."""
        self._changes.append(change)
        if self._writing is None or self._writing.done():
            self._writing = asyncio.create_task(self._write_changes())

    async def _write_changes(self) -> None:
        while self._changes:
            batch, self._changes = self._changes, []
            try:
                async with self.db.begin() as session:
                    await sends.settle(session, batch)
            except Exception:  # the rows stay 'sending': after the lease, unknown or repeated by their kind's rule
                log.exception("send.mark_failed", sends=len(batch))

    async def flushed(self) -> None:
        """Wait until every change is written and every resumed send is done (shutdown, tests)."""
        while (self._writing is not None and not self._writing.done()) or self._resuming:
            await asyncio.gather(*(task for task in (self._writing, *self._resuming) if task is not None), return_exceptions=True)

    # ------------------------------------------------------------ resume
    async def _resume_round(self) -> bool:
        """Renew the leases of what this instance is sending; take over what nobody holds."""
        if self._mine and time.monotonic() - self._renewed > self.lease / 3:
            async with self.db.begin() as session:
                await sends.renew(session, list(self._mine), self.owner, utcnow() + timedelta(seconds=self.lease))
            self._renewed = time.monotonic()
        now = utcnow()
        if time.monotonic() - self._pruned > PRUNE_EVERY:
            async with self.db.begin() as session:
                await sends.prune(session, now - KEEP_SETTLED)
            self._pruned = time.monotonic()
        async with self.db() as session:
            if not await sends.any_claimable(session, now):
                return False
        async with self.db.begin() as session:
            taken = await sends.claim(session, self.owner, now, now + timedelta(seconds=self.lease), CLAIM_BATCH)
            unknown = [row.id for row in in_flight(taken) if not REPEATED_WHEN_UNKNOWN[row.kind]]
            await sends.settle(session, [{"id": row_id, "state": "unknown", "error": "in flight when its instance stopped"}
                                         for row_id in unknown])
            resumed = await sends.get(session, [row.id for row in taken if row.id not in unknown])
        if taken:
            log.info("send.taken_over", resumed=len(resumed), unknown=len(unknown))
        by_chat: dict[int, list[TgSend]] = defaultdict(list)
        for row in resumed:
            self._mine.add(row.id)
            by_chat[row.chat_id].append(row)
        for rows in by_chat.values():
            task = asyncio.create_task(self._resume_chat(rows))
            self._resuming.add(task)
            task.add_done_callback(self._resuming.discard)
        return len(taken) == CLAIM_BATCH

    async def _resume_chat(self, rows: list[TgSend]) -> None:
        for row in rows:
            if row.not_before is not None:
                await asyncio.sleep(max(0.0, (row.not_before - utcnow()).total_seconds()))
            out = Outgoing.of(row)
            try:
                message = await self.send(out)
            except (Unknown, GaveUp):
                continue
            except Exception as exc:
                if self.refused is not None:
                    await self.refused(out, exc)
                continue
            if self.delivered is not None:
                await self.delivered(out, message)
