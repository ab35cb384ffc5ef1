"""Managers' replies from amoCRM's chat panel delivered to the buyer in Telegram (stored by :mod:`bot.crm.hook`).

The hook hands each stored reply to :meth:`Replies.dispatch` (delivered at once, one buyer's in order); the loop
takes what is due again (a retry, or a reply whose instance died) and hands it over the same way, without waiting
for it: one buyer's long wait for Telegram (a flood wait, an outage) holds up no one else's replies. The leases of
the replies under way are renewed meanwhile, so no other try takes them. Text goes through the send outbox as a
relayed message (:mod:`bot.sender`: never sent twice when its outcome is unknown); the reply keeps that record, so a try after
a crash (or after waiting out Telegram past the lease) takes its outcome instead of sending a second copy. The worker sends each (text with amoCRM's formatting as safe Telegram HTML; pictures, files, video and voice
downloaded from amoCRM with a size cap and a timeout), logs it as the manager's message (so the SLA wait
closes, and it is not sent back to the chat), shows it in the lead's operator topic «из amoCRM: <manager>»
and queues the delivery status for amoCRM (delivered, or an error with the reason).
"""
from __future__ import annotations

import asyncio
import html
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog
from aiogram.exceptions import TelegramAPIError, TelegramNetworkError
from aiogram.types import BufferedInputFile
from aiogram.types import Message as TgMessage
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.crm import chats
from bot.crm.amojo import DELIVERED, ERROR
from bot.crm.conversation import STATUS
from bot.crm.models import CHAT, PENDING, AmojoReply, OutboxItem
from bot.db import sends
from bot.db.base import utcnow
from bot.db.models import Lead, TgSend
from bot.journal import Journal
from bot.loops import Loop
from bot.messenger import BuyerUnreachable, Messenger
from bot.ports import OperatorTopic
from bot.sender import RELAY, GaveUp, Outgoing, Unknown
from bot.texts import t

log = structlog.get_logger(__name__)

MAX_FILE = 20 * 1024 * 1024  # bytes a manager's file may have (Telegram bots may upload 50 MB)
FILE_TIMEOUT = 30.0  # seconds to download it from amoCRM
LEASE = 120.0  # seconds before a claimed reply whose worker died is taken again
RETRY = timedelta(seconds=5)
MEDIA_KINDS = {"picture": "photo", "file": "document", "video": "video", "voice": "voice", "audio": "document", "sticker": "photo"}


# ------------------------------------------------------------------ formatting
_MARKS = [(re.compile(r"\*\*(.+?)\*\*|\*(.+?)\*"), "b"), (re.compile(r"(?<!\w)_(.+?)_(?!\w)"), "i"),
          (re.compile(r"~(.+?)~"), "s"), (re.compile(r"`(.+?)`"), "code")]


def telegram_html(text: str) -> str:
    """amoCRM chat text (plain, with ``*bold*``, ``_italic_``, ``~strike~``, `` `code` ``) as Telegram HTML, everything else escaped."""
    plain = html.escape(text, quote=False)
    result = plain
    for pattern, tag in _MARKS:
        result = pattern.sub(lambda m, tag=tag: f"<{tag}>{next(g for g in m.groups() if g is not None)}</{tag}>", result)
    return result if _nested(result) else plain


def _nested(text: str) -> bool:
    """The tags open and close in order (marks that overlap would make Telegram refuse the message)."""
    stack: list[str] = []
    for closing, tag in re.findall(r"<(/?)(b|i|s|code)>", text):
        if not closing:
            stack.append(tag)
        elif not stack or stack.pop() != tag:
            return False
    return not stack


# ------------------------------------------------------------------ delivery
UNCONFIRMED = "Telegram did not confirm the delivery; not sent again (the buyer may have it)"


class Replies:
    """Delivers stored replies, oldest first; each once (claimed through the database)."""

    def __init__(self, db: async_sessionmaker[AsyncSession], journal: Journal, messenger: Messenger, http: httpx.AsyncClient,
                 wake_outbox: Callable[[], None], clock: Callable[[], datetime] = utcnow, *, lang: str = "ru") -> None:
        self.db = db
        self.journal = journal
        self.messenger = messenger
        self.http = http
        self.wake_outbox = wake_outbox
        self.clock = clock
        self.topic: OperatorTopic | None = None  # the operator chat, when there is one (app.py)
        self.lang = lang  # of the notice in the topic
        self._turns: dict[str, asyncio.Lock] = {}  # conversation → its lock while replies to it are under way
        self._waiting: Counter[str] = Counter()
        self._held: dict[asyncio.Task[None], AmojoReply] = {}  # deliveries under way → their reply (its lease renewed)
        self._renewed = 0.0
        self._wake = asyncio.Event()  # a delivery ended: the buyer's next reply may be due

    def dispatch(self, reply: AmojoReply) -> None:
        """Deliver a claimed reply (stored by the hook, or taken by the loop) in the background, after the buyer's
        earlier ones."""
        task = asyncio.create_task(self._in_turn(reply))
        self._held[task] = reply
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        del self._held[task]
        self._wake.set()

    async def round(self) -> bool:
        """Renew the leases of the replies under way; start delivering what is due (each buyer's first, buyers side by side)."""
        if self._held and time.monotonic() - self._renewed > LEASE / 3:
            await chats.renew_replies(self.db, list(self._held.values()), self.clock())
            self._renewed = time.monotonic()
        replies = await chats.claim_replies(self.db, self.clock(), LEASE)
        for reply in replies:
            self.dispatch(reply)
        return bool(replies)

    async def idle(self) -> None:
        """Until the replies under way are delivered (shutdown, tests)."""
        while self._held:
            await asyncio.gather(*self._held, return_exceptions=True)

    @asynccontextmanager
    async def _turn(self, conversation: str) -> AsyncIterator[None]:
        """One reply to a buyer at a time, in the order they came (asyncio's lock is first come, first served)."""
        self._waiting[conversation] += 1
        lock = self._turns.setdefault(conversation, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            self._waiting[conversation] -= 1
            if not self._waiting[conversation]:
                del self._waiting[conversation], self._turns[conversation]

    async def _in_turn(self, reply: AmojoReply) -> None:
        async with self._turn(reply.conversation_id):
            try:
                await self._deliver(reply)
            except Exception:  # the reply stays claimed; the loop takes it again when its lease runs out
                log.exception("amojo.reply_crashed", reply_id=reply.id)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await Loop("crm.replies", self.round, every=1.0, wake=self._wake).run(stop)
            await self.idle()
        finally:  # stopped before they were done: their replies stay claimed, taken again when the lease runs out
            for task in list(self._held):
                task.cancel()

    async def _deliver(self, reply: AmojoReply) -> None:
        content = reply.payload.get("message") or {}
        manager = (reply.payload.get("sender") or {}).get("name") or "amoCRM"
        kind = MEDIA_KINDS.get(content.get("type") or "text")
        text = telegram_html(content.get("text") or "")
        async with self.db.begin(urgent=True) as session:  # on the way to the buyer: the buyer, and a text recorded, at once
            lead = await self._lead(session, reply.conversation_id)
            send_id = await chats.send_of(session, reply.id)
            earlier = next(iter(await sends.get(session, [send_id])), None) if send_id is not None else None
            staged: list[Outgoing] = []
            if lead is not None and not kind and send_id is None:
                staged = await self.messenger.stage(session, lead, [(text, None)], kind=RELAY)
                await chats.keep_send(session, reply.id, staged[0].id)
        if lead is None:
            await self._close(reply, None, f"no buyer for conversation {reply.conversation_id}", manager)
            return
        if send_id is not None:
            await self._recorded(reply, lead, earlier, manager, content.get("text") or "")
            return
        try:
            sent = await self._send(lead, kind, text, staged, content)
        except BuyerUnreachable as exc:
            await self._close(reply, lead, exc.reason, manager)
            return
        except GaveUp as exc:
            await self._close(reply, lead, f"Telegram did not take the message in time: {exc}", manager)
            return
        except (TelegramNetworkError, httpx.TransportError) as exc:  # try again shortly; the status waits
            log.warning("amojo.reply_retry", reply_id=reply.id, error=str(exc))
            async with self.db.begin() as session:
                await chats.finish_reply(session, reply, self.clock(), error=str(exc), retry_at=self.clock() + RETRY)
            return
        except (TelegramAPIError, ValueError) as exc:
            await self._close(reply, lead, str(exc), manager)
            return
        if sent is None:
            await self._close(reply, lead, UNCONFIRMED, manager)
            return
        await self._delivered(reply, lead, sent.message_id, sent.text or sent.caption, manager, content.get("text") or "", kind or "text")

    async def _recorded(self, reply: AmojoReply, lead: Lead, earlier: TgSend | None, manager: str, text: str) -> None:
        """A reply whose text an earlier try recorded (it died, or waited out Telegram past the lease): that record's
        outcome, never a second copy. Still pending, the sender (or its resume loop) is on it: looked at again shortly."""
        if earlier is not None and earlier.state in sends.PENDING:
            async with self.db.begin() as session:
                await chats.finish_reply(session, reply, self.clock(), error=f"its text (send {earlier.id}) is being sent",
                                         retry_at=self.clock() + RETRY)
        elif earlier is not None and earlier.state == "sent":
            await self._delivered(reply, lead, earlier.tg_message_id, None, manager, text, "text")
        elif earlier is not None and earlier.state == "failed":
            await self._close(reply, lead, earlier.error or "Telegram refused the message", manager)
        else:  # unknown (the buyer may have it), or forgotten (a record is kept a week)
            await self._close(reply, lead, UNCONFIRMED, manager)

    async def _send(self, lead: Lead, kind: str | None, text: str, staged: list[Outgoing], content: dict[str, Any]) -> TgMessage | None:
        """The one place a reply from amoCRM leaves for Telegram, by the sender's rule for relayed messages (None when
        its outcome is unknown: not repeated): a text recorded in the send outbox, a file downloaded from amoCRM."""
        if kind is None:
            return next(iter(await self.messenger.deliver(lead, staged, log=False)), None)
        file = await self._download(content)
        try:
            return await self.messenger.send_media(lead, kind, file, caption=text or None)  # the relay's rule too
        except Unknown:
            return None

    async def _lead(self, session: AsyncSession, conversation_id: str) -> Lead | None:
        row = await chats.by_conversation(session, conversation_id)
        if row is not None:
            return await session.get(Lead, row.lead_id)
        if conversation_id.startswith("tg-") and conversation_id[3:].isdigit():
            return (await session.scalars(select(Lead).where(Lead.tg_user_id == int(conversation_id[3:])))).first()
        return None

    async def _download(self, content: dict[str, Any]) -> BufferedInputFile:
        """The reply's file from amoCRM: at most :data:`MAX_FILE` bytes within :data:`FILE_TIMEOUT` seconds."""
        url = content.get("media") or ""
        if not url.startswith(("http://", "https://")):
            raise ValueError("the reply's file has no URL")
        data = bytearray()
        try:
            async with asyncio.timeout(FILE_TIMEOUT), self.http.stream("GET", url) as response:
                if response.status_code != 200:
                    raise ValueError(f"amoCRM answered {response.status_code} for the reply's file")
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > MAX_FILE:
                        raise ValueError(f"the reply's file is larger than {MAX_FILE // 1024 // 1024} MB")
        except TimeoutError:  # a refusal like the others (amoCRM hears why), not a crash taken again after every lease
            raise ValueError(f"the reply's file did not download within {FILE_TIMEOUT:g} s") from None
        return BufferedInputFile(bytes(data), filename=content.get("file_name") or url.rsplit("/", 1)[-1] or "file")

    async def _delivered(self, reply: AmojoReply, lead: Lead, tg_message_id: int | None, sent_text: str | None, manager: str, text: str,
                         kind: str) -> None:
        """Log it as the manager's message (the SLA wait closes), queue «delivered», show it in the topic; once, by the
        try that still holds the reply."""
        async with self.db.begin() as session:
            if not await chats.finish_reply(session, reply, self.clock()):
                return
            fresh = await session.get(Lead, lead.id)
            if fresh is not None:
                await self.journal.message(session, fresh, direction="out", author="manager", author_name=manager, kind=kind,
                                           text=sent_text or text, tg_chat_id=lead.tg_user_id, tg_message_id=tg_message_id,
                                           meta={"amojo_message_id": reply.message_id, "via": "amocrm"})
            self._status(session, lead.id, reply.message_id, DELIVERED)
        self.wake_outbox()
        await self._show(lead, manager, text or f"[{kind}]")

    async def _close(self, reply: AmojoReply, lead: Lead | None, reason: str, manager: str) -> None:
        """Not deliverable (the buyer blocked the bot, a file too large…): the error status goes back to amoCRM."""
        log.info("amojo.reply_failed", reply_id=reply.id, reason=reason)
        async with self.db.begin() as session:
            if not await chats.finish_reply(session, reply, self.clock(), error=reason):
                return
            if lead is not None:
                self._status(session, lead.id, reply.message_id, ERROR, reason)
        self.wake_outbox()

    def _status(self, session: AsyncSession, lead_id: int, message_id: str, status: int, error: str | None = None) -> None:
        payload = {"msgid": message_id, "status": status, **({"error": error} if error else {})}
        session.add(OutboxItem(lead_id=lead_id, op=CHAT, key=STATUS, payload=payload, state=PENDING, created_at=self.clock()))

    async def _show(self, lead: Lead, manager: str, text: str) -> None:
        if self.topic is None:
            return
        try:
            await self.topic.notice(lead, t(self.lang, "relay.from_amocrm", manager=manager, text=text))
        except TelegramAPIError as exc:
            log.warning("amojo.topic_failed", lead_id=lead.id, error=str(exc))
