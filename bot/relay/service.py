"""The operator chat: one forum topic per lead, the two-way relay, quick replies, card buttons, SLA pings.

Buyer → managers: every free buyer message (the journey's :class:`BuyerRelay` hook) is copied
into the lead's topic, created with a lead card on first need and recreated if it was deleted.
Managers → buyer: any message in a lead's topic is copied to the buyer from the bot, except
internal notes (``//`` or ``#note``) and commands. Every pair of messages is kept in
``relay_links``, so replies and edits find their counterpart after a restart.

Without topics (a plain supergroup, the lesser mode) buyer messages are forwarded, so the
author shows, and managers answer by replying to them or to the lead card.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from weakref import WeakValueDictionary

import structlog
from aiogram.enums import ChatMemberStatus, ContentType
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramForbiddenError,
)
from aiogram.types import (
    BotCommand,
    BotCommandScopeChat,
    CallbackQuery,
    ReplyParameters,
    User,
)
from aiogram.types import Message as TgMessage
from jinja2 import TemplateError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import keyboards
from bot.config import Settings
from bot.db.models import Lead, LeadEvent
from bot.funnel import CLOSED, STAGES
from bot.hours import WorkingHours
from bot.journal import BANNED, GREETED, QUESTION_ASKED, STAGE_CHANGED, UNBANNED, Journal, Record
from bot.loops import Loop
from bot.messenger import BuyerUnreachable, Messenger, unreachable_reason
from bot.ports import Catalog, Journey
from bot.quiz import Quiz
from bot.relay import store
from bot.relay.albums import Albums
from bot.relay.card import (
    TOPIC_COLOR,
    RelayCb,
    card_keyboard,
    card_text,
    fingerprint,
    stage_keyboard,
    stage_label,
    topic_name,
)
from bot.relay.config import BUILTIN_COMMANDS, TemplateContext, load_roster
from bot.relay.models import RelayTopic
from bot.relay.sla import Sla
from bot.texts import Safe, t

log = structlog.get_logger(__name__)
T = TypeVar("T")

TEXT_LIMIT, CAPTION_LIMIT = 4096, 1024
#: What is relayed (service messages — topic created, member joined… — are not).
RELAYED = frozenset({
    ContentType.TEXT, ContentType.PHOTO, ContentType.DOCUMENT, ContentType.VOICE, ContentType.VIDEO, ContentType.VIDEO_NOTE,
    ContentType.STICKER, ContentType.LOCATION, ContentType.CONTACT, ContentType.AUDIO, ContentType.ANIMATION, ContentType.VENUE,
})
QUICK_REPLIES = ("price", "test", "phone")
ADMIN_ACTIONS = ("ban", "unban", "reload")
MEMBER_TTL = 300.0  # seconds a confirmed chat membership is trusted
POLL = 1.0  # seconds between background rounds
NO_TELEGRAM = "no Telegram account"


def utf16_len(text: str) -> int:
    """Length as Telegram counts it."""
    return len(text.encode("utf-16-le")) // 2


def cut(text: str, limit: int) -> tuple[str, str]:
    """The beginning of ``text`` that fits ``limit`` UTF-16 units (ending at a line break or space if one is near), and the rest."""
    units = 0
    for end, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            break
    else:
        return text, ""
    space = max(text.rfind("\n", 0, end), text.rfind(" ", 0, end))
    if space > end // 2:
        end = space + 1
    return text[:end].rstrip(), text[end:].lstrip()


def chunks(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """``text`` in parts of at most ``limit`` UTF-16 units."""
    parts = []
    while text:
        part, text = cut(text, limit)
        if part:
            parts.append(part)
    return parts


def internal_note(message: TgMessage) -> str | None:
    """The note of a message that starts with ``//`` or ``#note`` (it stays in the team), else None."""
    text = (message.text or message.caption or "").lstrip()
    for marker in ("//", "#note"):
        if text[: len(marker)].lower() == marker:
            return text[len(marker):].strip()
    return None


def thread_gone(exc: TelegramBadRequest) -> bool:
    """The lead's topic (or its card) no longer exists: deleted, or archived by Telegram."""
    text = exc.message.lower()
    return any(marker in text for marker in ("thread not found", "topic_id_invalid", "topic_deleted", "message to edit not found"))


def unmodified(exc: TelegramBadRequest) -> bool:
    """Telegram refused a change that was already there (``message is not modified``, ``TOPIC_NOT_MODIFIED``)."""
    text = exc.message.lower()
    return "not modified" in text or "not_modified" in text


def _reply(message_id: int | None) -> ReplyParameters | None:
    return ReplyParameters(message_id=message_id, allow_sending_without_reply=True) if message_id else None


def _money(amount: int) -> str:
    return f"{amount:,}".replace(",", "\u00a0")


class RelayService:
    def __init__(
        self,
        settings: Settings,
        db: async_sessionmaker[AsyncSession],
        journal: Journal,
        messenger: Messenger,
        journey: Journey,
        catalog: Catalog,
        quiz: Quiz,
    ) -> None:
        self.settings = settings
        self.chat_id = settings.operator_chat_id
        self.lang = settings.default_language
        self.db = db
        self.journal = journal
        self.messenger = messenger
        self.bot = messenger.bot
        self.journey = journey
        self.catalog = catalog
        self.quiz = quiz
        self.roster = load_roster(settings.operators_config)
        hours = WorkingHours.parse(settings.working_hours, settings.working_days, settings.timezone)
        self.sla = Sla(db, journal, hours, minutes=settings.sla_minutes, escalate_minutes=settings.sla_escalate_minutes,
                       roster=self.roster, lang=self.lang)
        self.albums = Albums()
        self.poll = POLL
        self._locks: WeakValueDictionary[int, asyncio.Lock] = WeakValueDictionary()
        self._members: dict[int, float] = {}
        self._forum: bool | None = None

    # ------------------------------------------------------------ journal
    async def on_record(self, session: AsyncSession, lead: Lead, record: Record) -> None:
        """Journal subscriber: SLA waits; a topic planned on arrival; a card to refresh after a lead event."""
        if self.chat_id is None:
            return
        await self.sla.on_record(session, lead, record)
        if isinstance(record, LeadEvent) and record.kind != QUESTION_ASKED:
            if record.kind == GREETED and self.settings.topic_on_arrival:
                await store.plan_topic(session, lead.id, self.chat_id)
            else:
                await store.mark_stale(session, lead.id)

    # --------------------------------------------------------------- topic
    def _lock(self, lead_id: int) -> asyncio.Lock:
        lock = self._locks.get(lead_id)
        if lock is None:
            lock = self._locks[lead_id] = asyncio.Lock()
        return lock

    async def _is_forum(self) -> bool:
        if self._forum is None:
            self._forum = bool((await self.bot.get_chat(self.chat_id)).is_forum)
        return self._forum

    def _card(self, lead: Lead, closed: bool) -> tuple[str, str]:
        name = topic_name(lead, self.quiz, self.lang)
        return name, card_text(lead, quiz=self.quiz, roster=self.roster, lang=self.lang, crm_url=self.settings.amocrm_base_url, closed=closed)

    async def _conversation(self, lead: Lead, *, gone: RelayTopic | None = None) -> RelayTopic:
        """The lead's topic with an up-to-date card; created, or recreated when ``gone``. Call under the lead's lock."""
        async with self.db() as session:
            topic = await store.topic(session, lead.id)
        if gone is not None and topic is not None and topic.card_message_id != gone.card_message_id:
            return topic  # another instance recreated it already
        if (gone is not None or topic is None or topic.card_message_id is None or topic.chat_id != self.chat_id
                or (topic.thread_id is not None) != await self._is_forum()):  # topics were switched on or off since
            return await self._create(lead, topic)
        try:
            await self._refresh(lead, topic)
        except TelegramBadRequest as exc:
            if not thread_gone(exc):
                raise
            return await self._create(lead, topic)
        return topic

    async def _create(self, lead: Lead, previous: RelayTopic | None) -> RelayTopic:
        """Create the topic (in a forum) and post the card; one instance wins if several try."""
        name, text = self._card(lead, closed=False)
        thread_id = None
        if await self._is_forum():
            thread_id = (await self.bot.create_forum_topic(self.chat_id, name, icon_color=TOPIC_COLOR)).message_thread_id
        card = await self.bot.send_message(self.chat_id, text, message_thread_id=thread_id,
                                           reply_markup=card_keyboard(lead, self.lang, closed=False))
        async with self.db.begin() as session:
            placed = await store.place_topic(session, lead.id, self.chat_id, thread_id, card.message_id, name=name,
                                             card_hash=fingerprint(name, text),
                                             replaces=previous.card_message_id if previous else None)
            topic = await store.topic(session, lead.id)
        if not placed:  # another instance was faster: ours goes
            with contextlib.suppress(TelegramAPIError):
                if thread_id is not None:
                    await self.bot.delete_forum_topic(self.chat_id, thread_id)
                else:
                    await self.bot.delete_message(self.chat_id, card.message_id)
        else:
            log.info("relay.topic_created", lead_id=lead.id, thread_id=thread_id, recreated=previous is not None)
        return topic

    async def _refresh(self, lead: Lead, topic: RelayTopic) -> None:
        """Edit the topic name and card if the lead changed."""
        name, text = self._card(lead, topic.is_closed)
        digest = fingerprint(name, text)
        if digest == topic.card_hash:
            return
        try:
            if topic.thread_id is not None and name != topic.name:
                await self.bot.edit_forum_topic(self.chat_id, topic.thread_id, name=name)
            await self.bot.edit_message_text(text, chat_id=self.chat_id, message_id=topic.card_message_id,
                                             reply_markup=card_keyboard(lead, self.lang, closed=topic.is_closed))
        except TelegramBadRequest as exc:
            if not unmodified(exc):
                raise
        async with self.db.begin() as session:
            row = await store.topic(session, lead.id)
            if row is not None and row.card_message_id == topic.card_message_id:
                row.name, row.card_hash = name, digest
        topic.name, topic.card_hash = name, digest

    async def _in_topic(self, lead: Lead, send: Callable[[RelayTopic], Awaitable[T]]) -> T:
        """Run ``send`` in the lead's topic; if the topic is gone, recreate it and run it again."""
        async with self._lock(lead.id):
            topic = await self._conversation(lead)
            try:
                return await send(topic)
            except TelegramBadRequest as exc:
                if not thread_gone(exc):
                    raise
                log.warning("relay.topic_gone", lead_id=lead.id, thread_id=topic.thread_id, error=exc.message)
                return await send(await self._conversation(lead, gone=topic))

    async def refresh_card(self, lead_id: int) -> None:
        async with self.db() as session:
            lead = await session.get(Lead, lead_id)
        if lead is not None:
            async with self._lock(lead_id):
                await self._conversation(lead)

    async def _notice(self, lead: Lead, text: str) -> None:
        """Post a notice in the lead's topic (in the reply mode: as a reply to its card)."""
        await self._in_topic(lead, lambda topic: self.bot.send_message(
            self.chat_id, text, message_thread_id=topic.thread_id,
            reply_parameters=_reply(topic.card_message_id if topic.thread_id is None else None)))

    async def _reply(self, origin: TgMessage, text: str) -> None:
        """Answer a manager's message (or button) where it is."""
        await self.bot.send_message(self.chat_id, text, message_thread_id=origin.message_thread_id if origin.is_topic_message else None,
                                    reply_parameters=_reply(origin.message_id))

    # ---------------------------------------------------------------- copy
    async def _send_parts(self, chat_id: int, text: str, *, thread_id: int | None, reply_to: int | None) -> list[int]:
        """Send a long text as plain-text parts (the first one replying to ``reply_to``)."""
        ids = []
        for part in chunks(text):
            sent = await self.bot.send_message(chat_id, part, message_thread_id=thread_id, reply_parameters=_reply(reply_to), parse_mode=None)
            ids.append(sent.message_id)
        return ids

    async def _copy(self, messages: list[TgMessage], chat_id: int, *, thread_id: int | None = None,
                    reply_to: int | None = None, forward: bool = False) -> list[tuple[int, int]]:
        """Copy (or forward) a message or an album; texts and captions over Telegram's limits follow as text parts.

        Returns ``(source message id, new message id)`` pairs.
        """
        first, source = messages[0], messages[0].chat.id
        if first.text is not None and utf16_len(first.text) > TEXT_LIMIT:
            return [(first.message_id, new) for new in await self._send_parts(chat_id, first.text, thread_id=thread_id, reply_to=reply_to)]
        too_long = not forward and any(m.caption and utf16_len(m.caption) > CAPTION_LIMIT for m in messages)
        ids = [message.message_id for message in messages]
        rest: dict[int, str] = {}  # caption text that did not fit, by source message
        if forward:
            copies: list[Any] = ([await self.bot.forward_message(chat_id, source, first.message_id, message_thread_id=thread_id)]
                                 if len(ids) == 1 else await self.bot.forward_messages(chat_id, source, ids, message_thread_id=thread_id))
        elif len(ids) == 1:
            caption = None
            if too_long:  # the caption's beginning stays on the copy
                caption, rest[first.message_id] = cut(first.caption, CAPTION_LIMIT)
            copies = [await self.bot.copy_message(chat_id, source, first.message_id, message_thread_id=thread_id,
                                                  reply_parameters=_reply(reply_to), caption=caption, parse_mode=None)]
        else:  # copyMessages can't shorten a caption: all of the album's captions follow as text
            rest = {message.message_id: message.caption for message in messages if too_long and message.caption}
            copies = await self.bot.copy_messages(chat_id, source, ids, message_thread_id=thread_id, remove_caption=True if too_long else None)
        pairs = list(zip(ids, (copy.message_id for copy in copies)))
        copied = dict(pairs)
        for message_id, text in rest.items():
            if text and message_id in copied:
                parts = await self._send_parts(chat_id, text, thread_id=thread_id, reply_to=copied[message_id])
                pairs += [(message_id, new) for new in parts]
        return pairs

    async def _edit(self, chat_id: int, message_id: int, source: TgMessage) -> str | None:
        """Mirror an edit of ``source`` onto its copy; None when done, else why it could not be."""
        try:
            if source.text is not None:
                if utf16_len(source.text) > TEXT_LIMIT:
                    return "message is too long"
                await self.bot.edit_message_text(source.text, chat_id=chat_id, message_id=message_id, entities=source.entities, parse_mode=None)
            else:
                if source.caption and utf16_len(source.caption) > CAPTION_LIMIT:
                    return "message caption is too long"
                await self.bot.edit_message_caption(chat_id=chat_id, message_id=message_id, caption=source.caption,
                                                    caption_entities=source.caption_entities, parse_mode=None)
        except TelegramBadRequest as exc:
            return None if unmodified(exc) else exc.message
        except TelegramForbiddenError as exc:
            return exc.message
        return None

    # -------------------------------------------------------- buyer → team
    async def forward(self, lead: Lead, message: TgMessage) -> None:
        """The journey's hook: a free buyer message goes to the lead's topic (an album once complete)."""
        if self.chat_id is None or lead.is_banned:
            return
        if message.media_group_id:
            self.albums.add(message.chat.id, message.media_group_id, message, lambda items: self._relay_in(lead, items))
            return
        await self.albums.flush(message.chat.id)
        await self._relay_in(lead, [message])

    async def _relay_in(self, lead: Lead, messages: list[TgMessage]) -> None:
        first = messages[0]
        reply_to = None
        if first.reply_to_message is not None:
            async with self.db() as session:
                link = await store.operator_side(session, first.chat.id, first.reply_to_message.message_id)
            reply_to = link.operator_message_id if link and link.operator_chat_id == self.chat_id else None
        forward = not await self._is_forum()

        async def send(topic: RelayTopic) -> list[tuple[int, int]]:
            if topic.is_closed:  # the buyer wrote again: the conversation is open
                await self._set_closed(lead, topic, False, manager=None)
                await self._refresh(lead, topic)
            return await self._copy(messages, self.chat_id, thread_id=topic.thread_id, reply_to=reply_to, forward=forward)

        try:
            pairs = await self._in_topic(lead, send)
        except TelegramAPIError as exc:  # the message stays in the conversation log (and amoCRM)
            log.error("relay.in_failed", lead_id=lead.id, message_id=first.message_id, error=str(exc))
            return
        async with self.db.begin() as session:
            await store.add_links(session, lead.id, "in", first.chat.id, pairs, self.chat_id)

    async def on_buyer_edit(self, message: TgMessage) -> None:
        """A buyer edited a relayed message: edit its copy (or post the new version under it)."""
        async with self.db() as session:
            link = await store.operator_side(session, message.chat.id, message.message_id)
            lead = await session.get(Lead, link.lead_id) if link else None
        if link is None or lead is None or link.direction != "in" or link.operator_chat_id != self.chat_id:
            return
        if await self._edit(self.chat_id, link.operator_message_id, message) is not None:
            text = t(self.lang, "relay.edited") + "\n" + (message.text or message.caption or "")
            await self._in_topic(lead, lambda topic: self._send_parts(self.chat_id, text, thread_id=topic.thread_id,
                                                                      reply_to=link.operator_message_id))
        async with self.db.begin() as session:
            fresh = await session.get(Lead, lead.id)
            await self.journal.message(session, fresh, direction="in", author="buyer", author_name=fresh.display_name,
                                       kind=message.content_type.value, text=message.text or message.caption,
                                       tg_chat_id=message.chat.id, tg_message_id=message.message_id,
                                       meta={"edit_of": message.message_id})

    # -------------------------------------------------------- team → buyer
    def manager_name(self, user: User) -> str:
        operator = self.roster.by_tg(user.id)
        return operator.name if operator else user.full_name

    async def _resolve(self, message: TgMessage) -> tuple[RelayTopic, Lead] | None:
        """The lead a message in the operator chat is about: by its topic, or by the message it replies to."""
        async with self.db() as session:
            if message.is_topic_message and message.message_thread_id:
                return await store.conversation(session, self.chat_id, thread_id=message.message_thread_id)
            if message.reply_to_message is None:
                return None
            replied = message.reply_to_message.message_id
            link = await store.buyer_side(session, self.chat_id, replied)
            card = None if link else await store.topic_by_card(session, self.chat_id, replied)
            lead_id = link.lead_id if link else card.lead_id if card else None
            return await store.conversation(session, self.chat_id, lead_id=lead_id) if lead_id else None

    async def on_operator_message(self, message: TgMessage) -> None:
        """A message in the operator chat: a command, an internal note, or an answer to relay to the buyer."""
        user = message.from_user
        if user is None or user.is_bot or message.content_type not in RELAYED:
            return
        note = internal_note(message)
        if note is None and message.text and message.text.startswith("/"):
            await self._command(message, user)
            return
        resolved = await self._resolve(message)
        if resolved is None:
            return
        _, lead = resolved
        name = self.manager_name(user)
        if note is not None:
            async with self.db.begin() as session:
                fresh = await session.get(Lead, lead.id)
                await self.journal.message(session, fresh, direction="out", author="manager", author_name=name,
                                           kind=message.content_type.value, text=note, tg_chat_id=self.chat_id,
                                           tg_message_id=message.message_id, is_internal=True, meta={"manager_tg_id": user.id})
            return
        scope = (self.chat_id, message.message_thread_id)
        if message.media_group_id:
            self.albums.add(scope, message.media_group_id, message, lambda items: self._relay_out(lead, items, user, name))
            return
        await self.albums.flush(scope)
        await self._relay_out(lead, [message], user, name)

    async def _to_buyer(self, lead: Lead, origin: TgMessage, send: Callable[[], Awaitable[T]]) -> T | None:
        """Run a send to the buyer; a refusal is reported under ``origin`` and an unreachable buyer flagged."""
        try:
            if lead.tg_user_id is None:
                raise BuyerUnreachable(lead.id, NO_TELEGRAM)
            return await send()
        except BuyerUnreachable as exc:  # already flagged by the messenger
            reason = exc.reason
        except (TelegramForbiddenError, TelegramBadRequest) as exc:
            reason = unreachable_reason(exc)
            if reason is None:
                await self._reply(origin, t(self.lang, "relay.failed", error=exc.message, time=self._time()))
                return None
            await self.messenger.mark_unreachable(lead.id, reason)
        log.info("relay.undelivered", lead_id=lead.id, reason=reason)
        await self._reply(origin, t(self.lang, "relay.undelivered", reason=self._reason(reason), time=self._time()))
        await self.refresh_card(lead.id)
        return None

    def _reason(self, reason: str) -> str:
        low = reason.lower()
        key = ("blocked" if "blocked" in low else "deactivated" if "deactivated" in low
               else "not_started" if "initiate" in low or "chat not found" in low
               else "no_telegram" if reason == NO_TELEGRAM else None)
        return Safe(t(self.lang, f"relay.reasons.{key}")) if key else reason

    def _time(self) -> str:
        return self.sla.clock().astimezone(self.sla.hours.tz).strftime(t(self.lang, "relay.time"))

    async def _relay_out(self, lead: Lead, messages: list[TgMessage], user: User, name: str) -> None:
        first = messages[0]
        reply_to = None
        if first.reply_to_message is not None:
            async with self.db() as session:
                link = await store.buyer_side(session, self.chat_id, first.reply_to_message.message_id)
            reply_to = link.buyer_message_id if link and link.lead_id == lead.id else None
        pairs = await self._to_buyer(lead, first, lambda: self._copy(messages, lead.tg_user_id, reply_to=reply_to))
        if pairs is None:
            return
        delivered: dict[int, int] = {}
        for source, buyer in pairs:
            delivered.setdefault(source, buyer)
        await self._remember_out(lead, [(buyer, source) for source, buyer in pairs],
                                 [(message, delivered.get(message.message_id)) for message in messages], user, name)

    async def _remember_out(self, lead: Lead, pairs: list[tuple[int, int]], logged: list[tuple[TgMessage, int | None]],
                            user: User, name: str, **meta: Any) -> None:
        """Map ``(buyer message, operator message)`` pairs; log each message with its id in the buyer's chat, as the manager's."""
        async with self.db.begin() as session:
            await store.add_links(session, lead.id, "out", lead.tg_user_id, pairs, self.chat_id)
            for message, buyer_message_id in logged:
                await self.messenger.log_out(lead.id, kind=message.content_type.value, text=message.text or message.caption,
                                             tg_message_id=buyer_message_id, author="manager", author_name=name,
                                             meta={"manager_tg_id": user.id, **meta}, session=session)

    async def on_operator_edit(self, message: TgMessage) -> None:
        """A manager edited a relayed message: edit the buyer's copy; a failure is reported."""
        if message.from_user is None or internal_note(message) is not None:
            return
        async with self.db() as session:
            link = await store.buyer_side(session, self.chat_id, message.message_id)
            lead = await session.get(Lead, link.lead_id) if link else None
        if link is None or lead is None or link.direction != "out":
            return
        error = await self._edit(lead.tg_user_id, link.buyer_message_id, message)
        if error is not None:
            await self._reply(message, t(self.lang, "relay.failed", error=error, time=self._time()))
            return
        async with self.db.begin() as session:
            await self.messenger.log_out(lead.id, kind=message.content_type.value, text=message.text or message.caption,
                                         tg_message_id=link.buyer_message_id, author="manager",
                                         author_name=self.manager_name(message.from_user),
                                         meta={"manager_tg_id": message.from_user.id, "edit_of": link.buyer_message_id}, session=session)

    # ------------------------------------------------- commands and buttons
    async def is_member(self, user_id: int) -> bool:
        """Whether ``user_id`` is in the operator chat (asked from Telegram, trusted for a few minutes)."""
        checked = self._members.get(user_id)
        if checked is not None and time.monotonic() - checked < MEMBER_TTL:
            return True
        try:
            member = await self.bot.get_chat_member(self.chat_id, user_id)
        except TelegramAPIError:
            return False
        ok = member.status in (ChatMemberStatus.CREATOR, ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.MEMBER) or (
            member.status == ChatMemberStatus.RESTRICTED and bool(getattr(member, "is_member", False)))
        if ok:
            self._members[user_id] = time.monotonic()
        return ok

    async def _command(self, message: TgMessage, user: User) -> None:
        words = message.text[1:].split(maxsplit=1)
        command, _, addressee = (words[0] if words else "").partition("@")
        command = command.lower()
        if addressee and addressee.lower() != ((await self.bot.me()).username or "").lower():
            return
        if not await self.is_member(user.id):
            log.warning("relay.command_refused", user_id=user.id, command=command)
            return
        if command == "stats":
            await self._reply(message, await self.sla.stats(self.chat_id))
        elif command == "templates":
            lines = [t(self.lang, "relay.templates")]
            lines += [t(self.lang, "relay.template_line", name=name, title=t(self.lang, f"relay.commands.{name}"))
                      for name in BUILTIN_COMMANDS if name not in ADMIN_ACTIONS]
            lines += [t(self.lang, "relay.template_line", name=name, title=title) for name, title in self.roster.titles.items()]
            await self._reply(message, "\n".join(lines))
        elif command == "reload":
            await self._reply(message, await self.reload() if user.id in self.settings.admin_ids else t(self.lang, "relay.admin_only"))
        elif (resolved := await self._resolve(message)) is None:
            await self._reply(message, t(self.lang, "relay.not_a_lead"))
        else:
            await self.act(resolved[1], command, origin=message, manager=user)

    async def on_button(self, query: CallbackQuery, data: RelayCb) -> None:
        """A lead card button (only for members of the operator chat)."""
        message = query.message
        if not isinstance(message, TgMessage) or message.chat.id != self.chat_id or not await self.is_member(query.from_user.id):
            await query.answer()
            return
        async with self.db() as session:
            lead = await session.get(Lead, data.lead)
            topic = await store.topic(session, data.lead)
        if lead is None or topic is None:
            await query.answer()
            return
        if data.action == "stages":
            await self.bot.edit_message_reply_markup(chat_id=self.chat_id, message_id=message.message_id, reply_markup=stage_keyboard(lead, self.lang))
        elif data.action == "back":
            await self.bot.edit_message_reply_markup(chat_id=self.chat_id, message_id=message.message_id,
                                                     reply_markup=card_keyboard(lead, self.lang, closed=topic.is_closed))
        elif data.action == "stage":
            await self.set_stage(lead, data.stage, origin=message, manager=query.from_user)
        else:
            await self.act(lead, data.action, origin=message, manager=query.from_user)
        await query.answer()

    async def act(self, lead: Lead, action: str, *, origin: TgMessage, manager: User) -> None:
        """A manager's action on a lead: a quick reply, the catalogue, close/reopen, ban/unban."""
        name = self.manager_name(manager)
        if action in ADMIN_ACTIONS and manager.id not in self.settings.admin_ids:
            await self._reply(origin, t(self.lang, "relay.admin_only"))
        elif action == "catalog":
            await self._send_catalog(lead, origin, manager, name)
        elif action in QUICK_REPLIES or self.roster.has_template(action):
            await self._quick_reply(lead, action, origin, manager, name)
        elif action in ("close", "reopen"):
            async with self.db() as session:
                topic = await store.topic(session, lead.id)
            await self._reply(origin, t(self.lang, f"relay.{'closed' if action == 'close' else 'reopened'}", manager=name))
            await self._set_closed(lead, topic, action == "close", manager=name)
            await self.refresh_card(lead.id)
        elif action in ("ban", "unban"):
            async with self.db.begin() as session:
                fresh = await session.get(Lead, lead.id, with_for_update=True)
                fresh.is_banned = action == "ban"
                await self.journal.event(session, fresh, BANNED if fresh.is_banned else UNBANNED, manager=name)
                if fresh.is_banned:
                    await self.sla.dismiss(session, fresh)
            await self._reply(origin, t(self.lang, "relay.banned" if action == "ban" else "relay.unbanned", manager=name))
            await self.refresh_card(lead.id)
        else:
            await self._reply(origin, t(self.lang, "relay.unknown_command", name=action))

    async def _send_catalog(self, lead: Lead, origin: TgMessage, manager: User, name: str) -> None:
        async def send() -> bool:
            await self.journey.send_catalog(lead)
            return True

        if await self._to_buyer(lead, origin, send):
            async with self.db.begin() as session:
                fresh = await session.get(Lead, lead.id)
                await self.sla.answer(session, fresh, manager.id, name)
            await self._reply(origin, t(self.lang, "relay.catalog_sent", manager=name))

    def _quick_text(self, lead: Lead, action: str, manager_name: str) -> tuple[str, Any]:
        """Text and keyboard of a quick reply, in the buyer's language."""
        lang = lead.language
        if action == "test":
            return t(lang, "journey.test_offer"), keyboards.test_offer(lang)
        if action == "phone":
            return t(lang, "relay.ask_phone"), keyboards.share_phone(lang)
        if action == "price":
            return self._price(lead), None
        return self.roster.render(action, lang, self._context(lead, manager_name)), None

    async def _quick_reply(self, lead: Lead, action: str, origin: TgMessage, manager: User, name: str) -> None:
        """Send a quick reply to the buyer as the manager's message, and its copy into the topic."""
        try:
            text, markup = self._quick_text(lead, action, name)
        except TemplateError as exc:
            await self._reply(origin, t(self.lang, "relay.failed", error=str(exc), time=self._time()))
            return
        sent = await self._to_buyer(lead, origin, lambda: self.bot.send_message(lead.tg_user_id, text, reply_markup=markup))
        if sent is None:
            return
        pairs = []
        try:  # the buyer has it; the copy shows the team what was sent
            mirror = await self.bot.copy_message(self.chat_id, lead.tg_user_id, sent.message_id, reply_parameters=_reply(origin.message_id),
                                                 message_thread_id=origin.message_thread_id if origin.is_topic_message else None)
            pairs = [(sent.message_id, mirror.message_id)]
        except TelegramAPIError as exc:
            log.warning("relay.mirror_failed", lead_id=lead.id, error=str(exc))
        await self._remember_out(lead, pairs, [(sent, sent.message_id)], manager, name, quick_reply=action)

    def _context(self, lead: Lead, manager_name: str) -> TemplateContext:
        lang = lead.language
        return TemplateContext(
            lead={
                "first_name": lead.first_name or "", "last_name": lead.last_name or "",
                "name": " ".join(part for part in (lead.first_name, lead.last_name) if part), "company": lead.company or "",
                "phone": lead.phone or "", "city": lead.interests.get("city") or "",
                "categories": self.quiz.labels_of("category", lead.interests, lang),
                "volume": ", ".join(self.quiz.labels_of("volume", lead.interests, lang)),
                "interests": self.quiz.describe(lead.interests, lang), "stage": stage_label(lead.stage, lang),
                "username": lead.tg_username or "",
            },
            manager={"name": manager_name},
        )

    def _price(self, lead: Lead) -> str:
        """/price: per category of the buyer, the number of models and the price range at their volume tier."""
        lang = lead.language
        tier, ranges = self.catalog.prices(lead.interests)
        category_q, volume_q = self.quiz.question("category"), self.quiz.question("volume")
        volume = volume_q.option(tier) if volume_q else None
        lines = [t(lang, "relay.price.title", volume=Safe(t(lang, "relay.price.volume", volume=volume.label(lang))) if volume else "")]
        for prices in ranges:
            option = category_q.option(prices.category) if category_q else None
            lines.append(t(lang, "relay.price.line", category=option.label(lang) if option else prices.category, count=prices.models,
                           low=_money(prices.low), high=_money(prices.high)))
        lines.append(t(lang, "relay.price.footer"))
        return "\n".join(lines)

    async def set_stage(self, lead: Lead, stage: str, *, origin: TgMessage, manager: User) -> None:
        """Move the lead to any stage (managers may go back too); recorded as ``stage_changed``."""
        if stage not in (*STAGES, *CLOSED):
            return
        name = self.manager_name(manager)
        async with self.db.begin() as session:
            fresh = await session.get(Lead, lead.id, with_for_update=True)
            previous, fresh.stage = fresh.stage, stage
            if previous != stage:
                await self.journal.event(session, fresh, STAGE_CHANGED, stage=stage, previous=previous, manager=name)
        await self._reply(origin, t(self.lang, "relay.stage_set", stage=stage_label(stage, self.lang), manager=name))
        await self.refresh_card(lead.id)

    async def _set_closed(self, lead: Lead, topic: RelayTopic, closed: bool, *, manager: str | None) -> None:
        """Close or reopen the conversation (and its forum topic); closing dismisses the open wait."""
        if topic.thread_id is not None:
            try:
                await (self.bot.close_forum_topic if closed else self.bot.reopen_forum_topic)(self.chat_id, topic.thread_id)
            except TelegramBadRequest as exc:
                if not unmodified(exc):
                    raise
        async with self.db.begin() as session:
            row = await store.topic(session, lead.id)
            row.is_closed = closed
            if closed:
                await self.sla.dismiss(session, await session.get(Lead, lead.id))
        topic.is_closed = closed
        log.info("relay.topic_closed" if closed else "relay.topic_reopened", lead_id=lead.id, manager=manager)

    async def reload(self) -> str:
        """Re-read OPERATORS_CONFIG (an admin's /reload); a broken file leaves the current one."""
        try:
            roster = load_roster(self.settings.operators_config)
        except ValueError as exc:
            return t(self.lang, "relay.reload_failed", error=str(exc))
        self.roster = self.sla.roster = roster
        await self._announce_commands()
        return t(self.lang, "relay.reloaded", templates=len(roster.titles), operators=len(roster.operators))

    async def _announce_commands(self) -> None:
        """The operator chat's command menu: built-ins and templates."""
        commands = [BotCommand(command=name, description=t(self.lang, f"relay.commands.{name}"))
                    for name in BUILTIN_COMMANDS if name not in ADMIN_ACTIONS]
        commands += [BotCommand(command=name, description=title) for name, title in self.roster.titles.items()]
        with contextlib.suppress(TelegramAPIError):
            await self.bot.set_my_commands(commands[:100], scope=BotCommandScopeChat(chat_id=self.chat_id))

    # ------------------------------------------------------------ background
    async def check_sla(self) -> int:
        """Post the overdue pings this instance claimed; returns how many."""
        pings = await self.sla.claim_due()
        for ping in pings:
            try:
                await self._notice(ping.lead, ping.text)
            except TelegramAPIError as exc:
                log.error("relay.ping_failed", lead_id=ping.lead.id, error=str(exc))
        return len(pings)

    async def tick(self) -> None:
        """One background round: topics planned on arrival, cards after lead events, SLA pings."""
        async with self.db.begin() as session:
            topics = await store.topics_to_refresh(session, self.chat_id)
            for topic in topics:
                topic.stale = False
        for topic in topics:
            try:
                await self.refresh_card(topic.lead_id)
            except TelegramAPIError as exc:
                log.error("relay.card_failed", lead_id=topic.lead_id, error=str(exc))
        await self.check_sla()

    async def run(self, stop: asyncio.Event) -> None:
        """The relay's background worker (``App.workers``), until ``stop``."""
        if self.chat_id is None:
            return
        try:
            await self._announce_commands()
            await Loop("relay", self.tick, every=self.poll).run(stop)
        finally:
            await self.albums.flush()

