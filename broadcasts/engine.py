"""The delivery engine: turns running broadcasts into Bot API calls, crash-safely and at Telegram's pace.

A run holds the broadcast's lease (``owner`` until ``lease_until``, renewed every second; a
paused or cancelled broadcast fails the renewal and the run stops). It first selects the
recipients (once, validating every message for every recipient before anything is sent),
then loops: take grants from the global rate limit, write the batch ``sending``, call the Bot
API, write the outcomes. A 429 pauses the whole sender for ``retry_after`` and puts the
row back; 403 blocked/deactivated and 400 chat-not-found mark the lead unreachable; 5xx
and connection failures are retried ``max_attempts`` times; a network error after the
request left is ``unknown``, like a row found ``sending`` when a dead sender's lease is
taken over — those are reported, never resent. With ``log_sent`` (the amoCRM chat channel is on) every message
sent is logged in the conversation (the journal, author ``broadcast``) in the transaction that records its outcome,
so the amoCRM chat holds it too.
"""
from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections import Counter, deque
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramNetworkError, TelegramRetryAfter, TelegramServerError
from aiogram.methods import SendMessage
from aiogram.types import FSInputFile, MessageId
from aiogram.types import Message as TgMessage
from aiohttp import ClientConnectorError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import metrics
from bot.db.base import utcnow
from bot.db.models import Lead
from bot.hours import QuietHours, zone_of
from bot.inbound import attachment
from bot.journal import BLOCKED, Journal
from bot.messenger import unreachable_reason
from bot.ports import Catalog, SendDocument
from bot.ratelimit import ChatSpacing, RateLimit, RedisChatSpacing
from bot.telegram import on_leaving
from broadcasts import segments, store
from broadcasts.content import Content, Renderer, Validation, Variant, too_many_skipped
from broadcasts.models import (
    DRAFT,
    FAILED,
    HOLDOUT,
    ONEOFF,
    PAUSED,
    PENDING,
    RUNNING,
    SENDING,
    SENT,
    SKIPPED,
    UNKNOWN,
    Broadcast,
)
from broadcasts.models import BLOCKED as ROW_BLOCKED
from broadcasts.schedule import Clock
from broadcasts.segments import Recipient, Segment

log = structlog.get_logger(__name__)

LEASE = timedelta(seconds=30)
RENEW_EVERY = 1.0  # seconds between lease renewals (also how soon a pause or cancel is noticed)
PAGE = 500  # due deliveries read per query
IN_FLIGHT = 256  # Bot API calls under way at once

# What a run ended with
FINISHED_RUN, IDLE, STOPPED, AUTO_PAUSED, BUSY, INVALID = "finished", "idle", "stopped", "paused", "busy", "invalid"


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _file_id(message: TgMessage) -> str | None:
    for media in (message.document, message.video, message.animation):
        if media is not None:
            return media.file_id
    return message.photo[-1].file_id if message.photo else None


class Engine:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        bot: Bot | None,
        journal: Journal,
        renderer: Renderer,
        limiter: RateLimit,
        *,
        paid: bool = False,
        quiet_hours: QuietHours | None = None,
        timezone: str = "Europe/Moscow",
        max_errors: int = 20,
        max_attempts: int = 3,
        clock: Clock = utcnow,
        catalog: Catalog | None = None,
        log_sent: bool = False,
        spacing: ChatSpacing | RedisChatSpacing | None = None,
    ) -> None:
        self.db = db
        self.log_sent = log_sent  # each message sent goes into the conversation log (the amoCRM chat shows it)
        self.bot = bot
        self.journal = journal
        self.renderer = renderer
        self.limiter = limiter
        self.paid = paid
        self.quiet_hours = quiet_hours
        self.timezone = timezone
        self.max_errors = max_errors
        self.max_attempts = max_attempts
        self.clock = clock
        self.spacing = spacing or ChatSpacing()
        self.catalog = catalog
        self.owner = owner_id()
        self.stopping = False
        self._active: set[int] = set()
        self._uploaded: dict[str, str] = {}  # local media path → file_id
        self._text_methods: dict[str, SendMessage] = {}  # keyboard JSON → sendMessage template
        self._upload_lock = asyncio.Lock()

    # ------------------------------------------------------------ scheduling
    async def due(self) -> list[int]:
        """Start scheduled broadcasts whose time has come; the running ones with work now."""
        now = self.clock()
        async with self.db() as session:  # read first: a write would queue behind (and hold up) the buyers' writes
            due = await store.any_due(session, now)
        if due:
            async with self.db.begin() as session:
                await store.activate_due(session, now)
        async with self.db() as session:
            return [i for i in await store.runnable(session, now) if i not in self._active]

    async def tick(self) -> dict[int, str]:
        """Run every broadcast that has work now, to the end of what is due; their outcomes."""
        ids = await self.due()
        outcomes = await asyncio.gather(*(self.run(i) for i in ids))
        return dict(zip(ids, outcomes))

    async def run(self, broadcast_id: int) -> str:
        """Take the lease of one broadcast and deliver what is due (see the module docstring)."""
        if broadcast_id in self._active:
            return BUSY
        self._active.add(broadcast_id)
        try:
            async with self.db.begin() as session:
                if not await store.claim(session, broadcast_id, self.owner, self.clock(), LEASE):
                    return BUSY
                unknown = await store.recover(session, broadcast_id)
                broadcast = await store.get(session, broadcast_id)
            if unknown:
                log.warning("broadcast.unknown_rows", broadcast_id=broadcast_id, rows=unknown)
            try:
                refused = None if broadcast.prepared else await self._prepare(broadcast)
                return refused or await _Run(self, broadcast).go()
            finally:
                async with self.db.begin() as session:
                    await store.release(session, broadcast_id, self.owner)
        finally:
            self._active.discard(broadcast_id)

    # ----------------------------------------------------------- recipients
    async def _prepare(self, broadcast: Broadcast) -> str | None:
        """Select and validate every recipient (keyset pages from the checkpoint); None once sending may start.

        A recipient whose own values break the message gets a ``skipped`` row with the reason; a broken
        message, or too many skipped (:class:`Validation`), sends the broadcast back to draft.
        """
        content, segment = Content(**broadcast.content), Segment(**broadcast.segment)
        now = self.clock()
        upto = broadcast.max_lead_id
        if upto is None:
            async with self.db.begin() as session:
                upto = await segments.last_id(session)
                await store.update_broadcast(session, broadcast.id, max_lead_id=upto)
        checked = Validation()
        async for page in segments.stream(self.db, segment, now, after=broadcast.prepared_upto, upto=upto):
            rows = [_row(broadcast.id, content, r.id, now, checked.check(self.renderer, content, r)) for r in page]
            async with self.db.begin() as session:
                if not await store.renew(session, broadcast.id, self.owner, self.clock(), LEASE):
                    return STOPPED
                if checked.broken:
                    break
                await store.add_deliveries(session, rows)
                await store.write_results(session, [], [row["lead_id"] for row in rows if row["state"] == HOLDOUT], now)
                await store.update_broadcast(session, broadcast.id, prepared_upto=page[-1].id)
        async with self.db.begin() as session:
            counts = Counter[str]()
            for (_, state), n in (await store.counts(session, broadcast.id)).items():
                counts[state] += n
            total, skipped = sum(counts.values()) - counts[HOLDOUT], counts[SKIPPED]  # the holdout is no recipient
            if checked.broken or too_many_skipped(skipped, total):
                await store.discard_deliveries(session, broadcast.id)
                failing = checked.failing if checked.broken else skipped
                await store.transition(
                    session, broadcast.id, (RUNNING,), DRAFT, errors=checked.problems, prepared_upto=0, max_lead_id=None,
                    note=f"{failing} recipient(s) fail validation; nothing was sent",
                )
                log.warning("broadcast.invalid", broadcast_id=broadcast.id, failing=failing)
                return INVALID
            skipped_note = {"note": f"{skipped} recipient(s) skipped: the message breaks with their own values",
                            "errors": checked.problems} if skipped else {}
            await store.update_broadcast(session, broadcast.id, prepared=True, total=total, **skipped_note)
        broadcast.prepared = True
        log.info("broadcast.prepared", broadcast_id=broadcast.id, recipients=total, skipped=skipped)
        return None

    # -------------------------------------------------------------- sending
    def quiet_until(self, r: Recipient, now: datetime) -> datetime | None:
        if self.quiet_hours is None:
            return None
        return self.quiet_hours.until(now, zone_of(r.interests.get("city"), self.timezone))

    async def _media(self, spec: str, send: SendDocument) -> TgMessage:
        """Send a file_id or URL as it is; a local file is uploaded once, then reused by file_id."""
        if spec.startswith(("http://", "https://")) or not Path(spec).is_file():
            return await send(spec)
        if spec not in self._uploaded:
            async with self._upload_lock:
                if spec not in self._uploaded:
                    message = await send(FSInputFile(spec))
                    self._uploaded[spec] = _file_id(message) or spec
                    return message
        return await send(self._uploaded[spec])

    def _text_method(self, markup_json: str) -> SendMessage:
        """The mass path's sendMessage with this keyboard, built once. Every recipient of a variant has the same
        keyboard, so it goes pre-serialised and each message copies the method instead of pydantic re-validating
        and re-dumping the keyboard thousands of times (a third of the engine's time per message)."""
        method = self._text_methods.get(markup_json)
        if method is None:
            paid = True if self.paid else None
            method = self._text_methods[markup_json] = SendMessage.model_construct(chat_id=0, text="", reply_markup=markup_json, allow_paid_broadcast=paid)
        return method

    async def deliver(self, variant: Variant, r: Recipient, broadcast_id: int, chat_id: int | None = None) -> TgMessage | MessageId:
        """One Bot API call (the message of ``variant`` for ``r``); returns what Telegram answered (a copy: its id only)."""
        if self.bot is None:
            raise RuntimeError("BOT_TOKEN is not set")
        chat = chat_id or r.tg_user_id
        text = self.renderer.text(variant, r)
        markup, markup_json = self.renderer.keyboard(variant, r.language, broadcast_id)
        if variant.media is None and not variant.catalog and variant.copy_of is None:
            method = self._text_method(markup_json).model_copy(update={"chat_id": chat, "text": text})
            return await self.bot(method)
        options: dict[str, Any] = {"reply_markup": markup, "allow_paid_broadcast": True if self.paid else None}
        if variant.copy_of is not None:
            return await self.bot.copy_message(chat, variant.copy_of.chat_id, variant.copy_of.message_id, **options)
        if variant.catalog:
            if self.catalog is None:
                raise RuntimeError("no catalogue renderer configured")
            message = await self.catalog.send(r, lambda file: self.bot.send_document(chat, file, caption=text or None, **options))
        elif variant.media is not None:
            kind, spec = variant.media
            method = getattr(self.bot, f"send_{kind}")
            message = await self._media(spec, lambda file: method(chat, file, caption=text or None, **options))
        return message


def _row(broadcast_id: int, content: Content, lead_id: int, now: datetime, problem: str | None) -> dict[str, Any]:
    """A delivery row: the lead's variant to send (``skipped`` if the message breaks with the lead's values, the
    ``problem``), or the holdout (never sent; counted as reached now)."""
    row = {"broadcast_id": broadcast_id, "lead_id": lead_id, "variant": HOLDOUT, "state": HOLDOUT, "sent_at": now, "error": None}
    if not (content.holdout and content.held_out(broadcast_id, lead_id)):
        row.update(variant=content.pick(broadcast_id, lead_id).name, state=SKIPPED if problem else PENDING, sent_at=None,
                   error=problem[:500] if problem else None)
    return row


def _outcome(row_id: int, source: str, state: str, *, error: str | None = None, message_id: int | None = None,
             sent_at: datetime | None = None, due_at: datetime | None = None, tries: int = 0) -> dict[str, Any]:
    return {"b_id": row_id, "b_from": source, "b_state": state, "b_error": error, "b_message_id": message_id,
            "b_sent_at": sent_at, "b_due_at": due_at, "b_tries": tries}


class _Run:
    """One broadcast being delivered by one engine (state lives here, not in the Engine)."""

    def __init__(self, engine: Engine, broadcast: Broadcast) -> None:
        self.e = engine
        self.b = broadcast
        self.content = Content(**broadcast.content)
        self.queue: deque[store.Row] = deque()
        self.cursor = 0
        self.in_flight: set[asyncio.Task[None]] = set()
        self.results: list[dict[str, Any]] = []
        self.sent: list[int] = []  # leads sent to since the last flush
        self.logged: list[tuple[int, TgMessage | MessageId]] = []  # (lead, what was sent) to log, with ``log_sent``
        self.blocked: list[tuple[int, str]] = []
        self.streak = 0
        self.stop: str | None = None
        self.note: str | None = None
        self.renewed = time.monotonic()

    async def go(self) -> str:
        try:
            while not self.stop and not self.e.stopping:
                await self._flush()
                if self.stop:
                    break
                if not self.queue and not await self._fill():
                    if not self.in_flight:
                        break
                    await asyncio.wait(self.in_flight, return_when=asyncio.FIRST_COMPLETED)
                    continue
                await self._dispatch()
        finally:
            if self.in_flight:
                await asyncio.wait(self.in_flight)
            await self._flush(final=True)
        if self.stop == AUTO_PAUSED:
            async with self.e.db.begin() as session:
                await store.transition(session, self.b.id, (RUNNING,), PAUSED, note=self.note)
            log.warning("broadcast.auto_paused", broadcast_id=self.b.id, reason=self.note)
            return AUTO_PAUSED
        if self.stop or self.e.stopping:
            return STOPPED
        if self.b.kind == ONEOFF:
            async with self.e.db.begin() as session:
                if await store.finish_if_done(session, self.b.id, self.e.clock()):
                    log.info("broadcast.finished", broadcast_id=self.b.id)
                    return FINISHED_RUN
        return IDLE

    async def _log(self, session: AsyncSession, logged: list[tuple[int, TgMessage | MessageId]]) -> None:
        """The messages sent, in the conversation log (one query for their leads)."""
        if not logged:
            return
        leads = {lead.id: lead for lead in await session.scalars(select(Lead).where(Lead.id.in_({lead_id for lead_id, _ in logged})))}
        for lead_id, message in logged:
            lead = leads.get(lead_id)
            if lead is None:
                continue
            sent = message if isinstance(message, TgMessage) else None
            await self.e.journal.message(
                session, lead, direction="out", author="broadcast", kind=sent.content_type.value if sent else "text",
                text=(sent.text or sent.caption) if sent else None, tg_chat_id=lead.tg_user_id, tg_message_id=message.message_id,
                meta={"broadcast_id": self.b.id, **(attachment(sent) if sent else {})},
            )

    async def _fill(self) -> bool:
        """Read the next page of due rows; at the end, look once more from the start (rows put back)."""
        for _ in range(2):
            async with self.e.db() as session:
                rows = await store.due(session, self.b.id, self.e.clock(), self.cursor, PAGE)
            if rows:
                self.cursor = rows[-1].id
                self.queue.extend(rows)
                return True
            if self.cursor == 0:
                return False
            self.cursor = 0
        return False

    async def _dispatch(self) -> None:
        """Write the next sendable rows ``sending`` (at most one window of the rate limit), then start their
        calls as grants come. Each grant is held until its request has left, so the window counts when the
        requests really went (however long the rows took to write or a PDF to render), and no jitter before
        that can bunch them at Telegram above the rate."""
        free = min(IN_FLIGHT - len(self.in_flight), self.e.limiter.limit)
        if free <= 0:
            await asyncio.wait(self.in_flight, return_when=asyncio.FIRST_COMPLETED)
            return
        now = self.e.clock()
        ready: list[store.Row] = []
        while self.queue and len(ready) < free:
            row = self.queue.popleft()
            if not row.reachable:
                self.results.append(_outcome(row.id, PENDING, SKIPPED, error="unsubscribed or unreachable"))
            elif self.b.quiet_hours and (until := self.e.quiet_until(row.recipient, now)) is not None:
                self.results.append(_outcome(row.id, PENDING, PENDING, due_at=until))
            else:
                ready.append(row)
        if not ready:
            return
        await self._flush()
        async with self.e.db.begin() as session:
            claimed = await store.mark_sending(session, [row.id for row in ready])
        batch = [row for row in ready if row.id in claimed]
        while batch:
            async with self.e.limiter.slot(len(batch)) as granted:
                leaving = {self._start(row) for row in batch[:granted]}
                batch = batch[granted:]
                while leaving:
                    _, leaving = await asyncio.wait(leaving, timeout=RENEW_EVERY)
                    if leaving:  # a catalogue takes a while to render: the lease is renewed meanwhile
                        await self._flush()

    def _start(self, row: store.Row) -> asyncio.Future[None]:
        """Start the row's call; the future is done once its request has left (or it failed before)."""
        left = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._send(row, left))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)
        return left

    async def _send(self, row: store.Row, left: asyncio.Future[None]) -> None:
        r = row.recipient

        def leaves() -> None:
            if not left.done():
                left.set_result(None)

        try:
            delay = await self.e.spacing.delay(r.tg_user_id)
            if delay:  # the chat had a message within the last second: give the grant back, take one when due
                leaves()
                await asyncio.sleep(delay)
                await self.e.limiter.take(1)
            on_leaving(leaves)
            message = await self.e.deliver(self.content.variant(row.variant), r, self.b.id)
        except TelegramRetryAfter as exc:
            await self.e.limiter.pause(exc.retry_after)
            metrics.BROADCAST.labels("retry_after").inc()
            self.results.append(_outcome(row.id, SENDING, PENDING))
            log.warning("broadcast.flood_wait", broadcast_id=self.b.id, retry_after=exc.retry_after)
        except Exception as exc:  # every other failure is recorded on the row
            self._failed(row, exc)
        else:
            metrics.BROADCAST.labels("sent").inc()
            self.streak = 0
            now = self.e.clock()
            self.results.append(_outcome(row.id, SENDING, SENT, message_id=message.message_id, sent_at=now, tries=1))
            self.sent.append(r.id)
            if self.e.log_sent:
                self.logged.append((r.id, message))
        finally:
            leaves()

    def _failed(self, row: store.Row, exc: Exception) -> None:
        reason = unreachable_reason(exc)
        if reason is not None:
            self.results.append(_outcome(row.id, SENDING, ROW_BLOCKED, error=reason, tries=1))
            self.blocked.append((row.recipient.id, reason))
            metrics.BROADCAST.labels("blocked").inc()
            return
        error = exc.message if isinstance(exc, TelegramAPIError) else f"{type(exc).__name__}: {exc}"
        never_left = isinstance(exc, TelegramNetworkError) and isinstance(exc.__cause__, ClientConnectorError)
        if isinstance(exc, TelegramNetworkError) and not never_left:
            state, due_at = UNKNOWN, None  # the request may have reached Telegram
        elif (isinstance(exc, TelegramServerError) or never_left) and row.attempts + 1 < self.e.max_attempts:
            state, due_at = PENDING, self.e.clock() + timedelta(seconds=5 * 2**row.attempts)
        else:
            state, due_at = FAILED, None
        self.results.append(_outcome(row.id, SENDING, state, error=error[:500], due_at=due_at, tries=1))
        metrics.BROADCAST.labels({UNKNOWN: "unknown", PENDING: "retried"}.get(state, "failed")).inc()
        self.streak += 1
        log.warning("broadcast.send_failed", broadcast_id=self.b.id, delivery_id=row.id, state=state, error=error)
        if self.e.max_errors and self.streak >= self.e.max_errors and not self.stop:
            self.stop, self.note = AUTO_PAUSED, f"paused after {self.streak} consecutive errors; last: {error[:200]}"

    async def _flush(self, *, final: bool = False) -> None:
        """Write buffered outcomes (and, every second, renew the lease) in one transaction."""
        renew = not final and time.monotonic() - self.renewed >= RENEW_EVERY
        if not (self.results or self.blocked or renew):
            return
        results, sent, blocked, logged = self.results, self.sent, self.blocked, self.logged
        self.results, self.sent, self.blocked, self.logged = [], [], [], []
        async with self.e.db.begin() as session:
            await store.write_results(session, results, sent, self.e.clock())
            await self._log(session, logged)
            for lead_id, reason in blocked:
                lead = await session.get(Lead, lead_id)
                if lead is not None and not lead.is_blocked:
                    lead.is_blocked = True
                    await self.e.journal.event(session, lead, BLOCKED, reason=reason, broadcast_id=self.b.id)
            if renew:
                self.renewed = time.monotonic()
                if not await store.renew(session, self.b.id, self.e.owner, self.e.clock(), LEASE):
                    self.stop = self.stop or STOPPED

