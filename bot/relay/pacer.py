"""Posts into the operator groups, paced under each group's budget: Telegram takes about 20 posts a minute
from a bot in one group (``GROUP_POSTS_PER_MINUTE``) and about 20 new topics (``GROUP_TOPICS_PER_MINUTE``).

The budgets (:class:`bot.relay.chat.Budgets`) are :mod:`bot.ratelimit` windows of 60 s per group, shared
by every instance through Redis when ``REDIS_URL`` is set. What waits for its turn waits in ``relay_posts``
(this module owns its queries), so a restart loses none. A group's round waits until the group may take a
post, then takes the queued posts of the lead most in need (a new lead, a first question or an SLA ping
before the rest; the oldest first): the topic's texts queued meanwhile go as one post, each line after its
time; a run of other messages as one ``copyMessages`` (at most 100 and half the group's budget; an album is
never split). A lead's posts are leased together, so they stay in order across instances. A 429 the Bot
session could not wait out pauses the group's budget for its ``retry_after``, and the posts go again; they
are deleted only once posted. Each request's posts are counted (``attempts``) before it leaves, and uncounted if
Telegram surely refused it: a post counted already may be in the group (its instance died with the request under way,
or Telegram's answer was lost), so it goes again after a notice saying the message below may be a repeat — a
buyer's message is never lost, and never repeated unannounced.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest, TelegramForbiddenError, TelegramRetryAfter
from aiogram.methods import SendMessage
from sqlalchemy import delete, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot import metrics
from bot.db.base import utcnow
from bot.db.models import Lead
from bot.inbound import Inbound
from bot.loops import Loop
from bot.relay import store
from bot.relay.albums import ALBUM_WAIT
from bot.relay.chat import OperatorChat, replying_to
from bot.relay.copier import TEXT_LIMIT, Copier, chunks, utf16_len
from bot.relay.models import RelayPost, RelayTopic
from bot.relay.topics import Topics
from bot.sender import GaveUp
from bot.texts import t

log = structlog.get_logger(__name__)

MESSAGE, NOTICE = "message", "notice"
LEASE = 60.0  # seconds a claimed lead's posts stay with the instance posting them
POLL = 1.0  # seconds between looks at an idle group
CANDIDATES = 200  # queued posts looked at to pick the next lead
COPY_LIMIT = 100  # ids per copyMessages
BATCH_TEXT = 3500  # UTF-16 units of buyer text in one coalesced post (its time marks and markup fit in 4096)


def inbound_payload(message: Inbound) -> dict[str, Any]:
    return dataclasses.asdict(message)


@dataclasses.dataclass
class _Segment:
    """What goes as one request: a notice, coalesced texts, or messages copied together."""

    posts: list[RelayPost]
    kind: str  # "notice" | "texts" | "copy"

    @property
    def messages(self) -> list[Inbound]:
        return [Inbound(**post.payload) for post in self.posts]


def _coalescible(message: Inbound) -> bool:
    return message.content_type == "text" and message.reply_to_message_id is None and utf16_len(message.text or "") <= BATCH_TEXT


def segments(posts: Sequence[RelayPost], *, forum: bool, copy_limit: int = COPY_LIMIT) -> list[_Segment]:
    """A lead's queued posts, in order, as requests: texts in a row become one post (in a forum), other
    messages in a row one ``copyMessages`` of at most ``copy_limit`` (an album is never split), notices and
    replies their own."""
    found: list[_Segment] = []
    for post in posts:
        if post.kind == NOTICE:
            found.append(_Segment([post], NOTICE))
            continue
        message = Inbound(**post.payload)
        last = found[-1] if found else None
        if forum and _coalescible(message):
            if (last is not None and last.kind == "texts"
                    and sum(utf16_len(m.text or "") for m in last.messages) + utf16_len(message.text or "") <= BATCH_TEXT):
                last.posts.append(post)
            else:
                found.append(_Segment([post], "texts"))
        elif message.content_type != "text" and message.reply_to_message_id is None:
            if last is not None and last.kind == "copy" and (len(last.posts) < copy_limit or (
                    message.media_group_id and message.media_group_id == last.messages[-1].media_group_id)):
                last.posts.append(post)
            else:
                found.append(_Segment([post], "copy"))
        else:
            found.append(_Segment([post], "single"))
    return found


# ------------------------------------------------------------------ queries of relay_posts
def _free(now: datetime) -> Any:
    return (RelayPost.lease_until.is_(None)) | (RelayPost.lease_until < now)


async def add(session: AsyncSession, *, chat_id: int, lead_id: int, kind: str, payload: dict[str, Any], urgent: bool) -> None:
    session.add(RelayPost(chat_id=chat_id, lead_id=lead_id, kind=kind, payload=payload, urgent=urgent))


async def queued(session: AsyncSession, chat_id: int) -> bool:
    return (await session.execute(select(RelayPost.id).where(RelayPost.chat_id == chat_id).limit(1))).first() is not None


async def has_messages(session: AsyncSession, lead_id: int) -> bool:
    """Whether a buyer message of the lead is queued."""
    query = select(RelayPost.id).where(RelayPost.lead_id == lead_id, RelayPost.kind == MESSAGE).limit(1)
    return (await session.execute(query)).first() is not None


async def claim(session: AsyncSession, chat_id: int, owner: str, now: datetime, lease_until: datetime) -> list[RelayPost]:
    """Lease to ``owner`` the queued posts of the lead most in need in the group (none held by another
    instance; an album still arriving waits); ``[]`` if there is none."""
    candidates = (await session.execute(
        select(RelayPost).where(RelayPost.chat_id == chat_id, _free(now))
        .order_by(RelayPost.urgent.desc(), RelayPost.id).limit(CANDIDATES))).scalars().all()
    seen: set[int] = set()
    for candidate in candidates:
        if candidate.lead_id in seen:
            continue
        seen.add(candidate.lead_id)
        held = select(RelayPost.id).where(RelayPost.lead_id == candidate.lead_id, RelayPost.owner != owner,
                                          RelayPost.lease_until >= now)
        if (await session.execute(select(exists(held)))).scalar():
            continue
        posts = (await session.execute(select(RelayPost).where(RelayPost.lead_id == candidate.lead_id, _free(now))
                                       .order_by(RelayPost.id))).scalars().all()
        last = posts[-1].payload if posts else {}
        if last.get("media_group_id") and posts[-1].created_at > now - timedelta(seconds=ALBUM_WAIT):
            continue  # more of the album may come
        result = await session.execute(
            update(RelayPost).where(RelayPost.id.in_([post.id for post in posts]), _free(now))
            .values(owner=owner, lease_until=lease_until).execution_options(synchronize_session=False))
        if result.rowcount != len(posts):  # another instance took some at the same moment: let it have them
            await release(session, [post.id for post in posts], owner)
            continue
        return list(posts)
    return []


async def release(session: AsyncSession, ids: Sequence[int], owner: str) -> None:
    await session.execute(update(RelayPost).where(RelayPost.id.in_(list(ids)), RelayPost.owner == owner)
                          .values(owner=None, lease_until=None).execution_options(synchronize_session=False))


async def count_attempt(session: AsyncSession, ids: Sequence[int], change: int) -> None:
    """Count (``+1``, before its request leaves) or uncount (``-1``, Telegram surely refused it) a request of the posts."""
    await session.execute(update(RelayPost).where(RelayPost.id.in_(list(ids))).values(attempts=RelayPost.attempts + change)
                          .execution_options(synchronize_session=False))


async def release_all(session: AsyncSession, owner: str) -> None:
    await session.execute(update(RelayPost).where(RelayPost.owner == owner).values(owner=None, lease_until=None)
                          .execution_options(synchronize_session=False))


async def done(session: AsyncSession, ids: Sequence[int]) -> None:
    await session.execute(delete(RelayPost).where(RelayPost.id.in_(list(ids))).execution_options(synchronize_session=False))


async def count(session: AsyncSession) -> int:
    """Posts queued in every group (tests, checks)."""
    return len((await session.execute(select(RelayPost.id))).all())


# ------------------------------------------------------------------ the pacer
class Pacer:
    """Queues posts for the operator groups and posts them, one group's round at a time."""

    def __init__(self, chat: OperatorChat, topics: Topics, copier: Copier) -> None:
        self.chat = chat
        self.topics = topics
        self.copier = copier
        self.owner = uuid.uuid4().hex
        self.lease = LEASE
        self.poll = POLL
        self._wake: dict[int, asyncio.Event] = {}
        self._stop = asyncio.Event()

    def wake(self, chat_id: int) -> asyncio.Event:
        event = self._wake.get(chat_id)
        if event is None:
            event = self._wake[chat_id] = asyncio.Event()
        return event

    async def message(self, lead: Lead, chat_id: int, message: Inbound, *, urgent: bool) -> None:
        """Queue a buyer's message for the lead's topic in group ``chat_id``."""
        async with self.chat.db.begin() as session:
            await add(session, chat_id=chat_id, lead_id=lead.id, kind=MESSAGE, payload=inbound_payload(message), urgent=urgent)
        self.wake(chat_id).set()

    async def notice(self, lead: Lead, chat_id: int, text: str, *, urgent: bool) -> None:
        """Queue a notice (HTML) for the lead's topic in group ``chat_id``."""
        async with self.chat.db.begin() as session:
            await add(session, chat_id=chat_id, lead_id=lead.id, kind=NOTICE, payload={"text": text}, urgent=urgent)
        self.wake(chat_id).set()

    async def run(self, stop: asyncio.Event) -> None:
        """Every group's rounds until ``stop``; then this instance's leases are given back."""
        self._stop = stop
        try:
            await asyncio.gather(*(Loop(f"relay.pacer.{chat_id}", lambda chat_id=chat_id: self.round(chat_id), every=self.poll,
                                        wake=self.wake(chat_id)).run(stop) for chat_id in self.chat.chat_ids))
        finally:
            async with self.chat.db.begin() as session:
                await release_all(session, self.owner)

    async def round(self, chat_id: int) -> bool:
        """Post the queued posts of one lead in group ``chat_id``, within its budget; whether there was one."""
        async with self.chat.db() as session:
            if not await queued(session, chat_id):
                return False
        if not await self._turn(chat_id):  # everything queued while waiting for it goes with it
            return False
        now = utcnow()
        async with self.chat.db.begin() as session:
            posts = await claim(session, chat_id, self.owner, now, now + timedelta(seconds=self.lease))
        if not posts:
            return False
        await self._post(chat_id, posts)
        return True

    async def _turn(self, chat_id: int) -> bool:
        """Wait until the group may take a post; False if the service stops first."""
        turn = asyncio.ensure_future(self.chat.budgets.ready(chat_id))
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({turn, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if turn.done():
            return True
        turn.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await turn
        return False

    async def _post(self, chat_id: int, posts: list[RelayPost]) -> None:
        async with self.chat.db() as session:
            lead = await session.get(Lead, posts[0].lead_id)
        pending = [post.id for post in posts]
        ids: list[int] = []
        try:
            copy_limit = min(COPY_LIMIT, max(1, self.chat.budgets.per_minute["posts"] // 2))
            for segment in segments(posts, forum=await self.topics.is_forum(chat_id), copy_limit=copy_limit):
                ids = [post.id for post in segment.posts]
                skip = lead is None or (lead.is_banned and segment.kind != NOTICE)
                pairs = [] if skip else await self._attempt(lead, segment)
                async with self.chat.db.begin() as session:
                    if lead is not None and pairs:
                        await store.add_links(session, lead.id, "in", lead.tg_user_id, pairs, chat_id)
                    await done(session, ids)
                pending = [post_id for post_id in pending if post_id not in ids]
                if segment.kind != NOTICE:
                    for message in segment.messages:
                        if message.sent_at:
                            metrics.RELAY.observe(max(0.0, time.time() - message.sent_at))
        except TelegramRetryAfter as exc:  # still refused after the Bot session's own waits: again after this one
            log.warning("relay.group_flood", chat_id=chat_id, retry_after=exc.retry_after)
            await self.chat.budgets.flood(chat_id, exc.retry_after)
            async with self.chat.db.begin() as session:
                await release(session, pending, self.owner)
        except (TelegramBadRequest, TelegramForbiddenError) as exc:  # it would fail again: the message stays in the log
            log.error("relay.in_failed", lead_id=posts[0].lead_id, chat_id=chat_id, error=str(exc))
            async with self.chat.db.begin() as session:
                await done(session, ids)
                await release(session, [post_id for post_id in pending if post_id not in ids], self.owner)
        except (TelegramAPIError, OSError, TimeoutError) as exc:  # Telegram unreachable: again after the loop's back-off
            log.warning("relay.in_retry", lead_id=posts[0].lead_id, chat_id=chat_id, error=str(exc))
            async with self.chat.db.begin() as session:
                await release(session, pending, self.owner)
            raise

    async def _attempt(self, lead: Lead, segment: _Segment) -> list[tuple[int, int]]:
        """:meth:`_send`, counted before it leaves; after a notice if an earlier request may have posted it."""
        ids = [post.id for post in segment.posts]
        if segment.kind != NOTICE and any(post.attempts for post in segment.posts):
            await self._notice(lead, t(self.chat.lang, "relay.repeated"))
        async with self.chat.db.begin() as session:
            await count_attempt(session, ids, +1)
        try:
            return await self._send(lead, segment)
        except (GaveUp, TelegramAPIError):  # surely not posted
            async with self.chat.db.begin() as session:
                await count_attempt(session, ids, -1)
            raise

    async def _notice(self, lead: Lead, text: str) -> None:
        chat = self.chat

        async def notice(topic: RelayTopic) -> None:
            async with chat.budgets.post(topic.chat_id):
                await self.copier.call(SendMessage(chat_id=topic.chat_id, text=text, message_thread_id=topic.thread_id,
                                                   reply_parameters=replying_to(topic.card_message_id if topic.thread_id is None else None)))

        await self.topics.send_in_topic(lead, notice)

    async def _send(self, lead: Lead, segment: _Segment) -> list[tuple[int, int]]:
        """Post one segment in the lead's topic, holding its posts of the group's budget while the request is under way;
        ``(buyer message id, operator message id)`` pairs."""
        chat, call = self.chat, self.copier.call
        if segment.kind == NOTICE:
            await self._notice(lead, segment.posts[0].payload["text"])
            return []
        messages = segment.messages
        if segment.kind == "texts" and len(messages) > 1:
            tz = chat.sla.hours.tz
            mark = t(chat.lang, "relay.time")
            lines = [t(chat.lang, "relay.batch_line", time=datetime.fromtimestamp(m.sent_at or time.time(), tz).strftime(mark),
                       text=m.text or "") for m in messages]
            parts = chunks("\n".join(lines), TEXT_LIMIT)

            async def batch(topic: RelayTopic) -> list[int]:
                await self._reopen(lead, topic)
                async with chat.budgets.post(topic.chat_id, len(parts)):
                    return [(await call(SendMessage(chat_id=topic.chat_id, text=part, message_thread_id=topic.thread_id))).message_id
                            for part in parts]

            ids = await self.topics.send_in_topic(lead, batch)
            return [(m.message_id, ids[0]) for m in messages]
        reply_to = None
        if messages[0].reply_to_message_id is not None:
            async with chat.db() as session:
                link = await store.operator_side(session, messages[0].chat_id, messages[0].reply_to_message_id)
            reply_to = link.operator_message_id if link and link.operator_chat_id in chat.chat_ids else None

        async def copy(topic: RelayTopic) -> list[tuple[int, int]]:
            await self._reopen(lead, topic)
            async with chat.budgets.post(topic.chat_id, len(messages)):
                return await self.copier.copy(messages, topic.chat_id, thread_id=topic.thread_id, reply_to=reply_to,
                                              forward=not await self.topics.is_forum(topic.chat_id))

        return await self.topics.send_in_topic(lead, copy)

    async def _reopen(self, lead: Lead, topic: RelayTopic) -> None:
        """The buyer wrote again: the conversation is open."""
        if topic.is_closed:
            await self.topics.set_closed(lead, topic, False, manager=None)
            await self.topics.refresh(lead, topic)
