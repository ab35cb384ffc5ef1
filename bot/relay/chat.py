"""The operator chat as every part of the relay sees it: its groups (``OPERATOR_CHAT_ID`` / ``OPERATOR_CHAT_IDS``)
and their budgets, which group a lead's conversation is in, who works there, how to answer there."""
from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

from aiogram.enums import ChatMemberStatus
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest
from aiogram.types import InlineKeyboardMarkup, Message, ReplyParameters, User
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.db.models import Lead
from bot.journal import Journal
from bot.messenger import Messenger
from bot.quiz import Quiz
from bot.ratelimit import RateLimit, rate_limit
from bot.relay.config import Roster
from bot.relay.models import RelayTopic
from bot.relay.sla import Sla
from bot.texts import t

MEMBER_TTL = 300.0  # seconds a confirmed chat membership is trusted


def thread_gone(exc: TelegramBadRequest) -> bool:
    """The lead's topic (or its card) no longer exists: deleted, or archived by Telegram."""
    text = exc.message.lower()
    return any(marker in text for marker in ("thread not found", "topic_id_invalid", "topic_deleted", "message to edit not found"))


def unmodified(exc: TelegramBadRequest) -> bool:
    """Telegram refused a change that was already there (``message is not modified``, ``TOPIC_NOT_MODIFIED``)."""
    text = exc.message.lower()
    return "not modified" in text or "not_modified" in text


def replying_to(message_id: int | None) -> ReplyParameters | None:
    return ReplyParameters(message_id=message_id, allow_sending_without_reply=True) if message_id else None


class Budgets:
    """Each operator group's budgets: posts and topic creations per minute (:mod:`bot.ratelimit` windows of
    60 s, shared by every instance through Redis when ``REDIS_URL`` is set). A post holds its grants while its
    request is under way, so they count until a minute after Telegram answered, however late it left."""

    def __init__(self, settings: Settings) -> None:
        self.redis_url = settings.redis_url
        self.per_minute = {"posts": settings.group_posts_per_minute, "topics": settings.group_topics_per_minute}
        self.period = 60.0  # seconds of the windows (tests shorten them along with the sandbox's)
        self._limits: dict[tuple[str, int], RateLimit] = {}

    def _limit(self, kind: str, chat_id: int) -> RateLimit:
        limit = self._limits.get((kind, chat_id))
        if limit is None:
            limit = self._limits[kind, chat_id] = rate_limit(self.per_minute[kind], self.period, redis_url=self.redis_url,
                                                             key=f"optobot:tg:group:{chat_id}:{kind}")
        return limit

    @asynccontextmanager
    async def post(self, chat_id: int, count: int = 1) -> AsyncIterator[None]:
        """Hold ``count`` posts of the group (at most its whole budget) for the block: the request that makes them."""
        limit = self._limit("posts", chat_id)
        async with AsyncExitStack() as held:
            for _ in range(min(count, limit.limit)):
                await held.enter_async_context(limit.slot())
            yield

    async def ready(self, chat_id: int) -> None:
        """Wait until the group may take a post (taking none)."""
        await self._limit("posts", chat_id).ready()

    async def flood(self, chat_id: int, seconds: float) -> None:
        """Telegram refused a post (429): no post into the group for ``seconds``."""
        await self._limit("posts", chat_id).pause(seconds)

    def new_topic(self, chat_id: int) -> AbstractAsyncContextManager[None]:
        """Hold one topic creation of the group for the block."""
        return self._limit("topics", chat_id).slot()

    async def close(self) -> None:
        for limit in self._limits.values():
            await limit.close()


class OperatorChat:
    def __init__(self, settings: Settings, db: async_sessionmaker[AsyncSession], journal: Journal, messenger: Messenger,
                 quiz: Quiz, roster: Roster, sla: Sla) -> None:
        self.settings = settings
        self.chat_ids = settings.operator_chats
        self.budgets = Budgets(settings)
        self.lang = settings.default_language
        self.db = db
        self.journal = journal
        self.messenger = messenger
        self.bot = messenger.bot
        self.quiz = quiz
        self.roster = roster  # replaced by /reload
        self.sla = sla
        self._members: dict[tuple[int, int], float] = {}

    def group(self, lead: Lead, topic: RelayTopic | None) -> int:
        """The group of the lead's conversation: where its topic is; else its responsible manager's group
        (``chat_id`` in the operators file); else one of the groups, evenly by lead."""
        if topic is not None and topic.chat_id in self.chat_ids:
            return topic.chat_id
        operator = self.roster.by_crm(lead.responsible_user_id)
        if operator is not None and operator.chat_id in self.chat_ids:
            return operator.chat_id
        return self.chat_ids[lead.id % len(self.chat_ids)]

    def manager_name(self, user: User) -> str:
        operator = self.roster.by_tg(user.id)
        return operator.name if operator else user.full_name

    async def is_member(self, chat_id: int, user_id: int) -> bool:
        """Whether ``user_id`` is in operator group ``chat_id`` (asked from Telegram, trusted for a few minutes)."""
        if chat_id not in self.chat_ids:
            return False
        checked = self._members.get((chat_id, user_id))
        if checked is not None and time.monotonic() - checked < MEMBER_TTL:
            return True
        try:
            member = await self.bot.get_chat_member(chat_id, user_id)
        except TelegramAPIError:
            return False
        ok = member.status in (ChatMemberStatus.CREATOR, ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.MEMBER) or (
            member.status == ChatMemberStatus.RESTRICTED and bool(getattr(member, "is_member", False)))
        if ok:
            self._members[chat_id, user_id] = time.monotonic()
        return ok

    async def reply(self, origin: Message, text: str, reply_markup: InlineKeyboardMarkup | None = None) -> None:
        """Answer a manager's message (or button) where it is (within the group's budget)."""
        async with self.budgets.post(origin.chat.id):
            await self.bot.send_message(origin.chat.id, text, message_thread_id=origin.message_thread_id if origin.is_topic_message else None,
                                        reply_parameters=replying_to(origin.message_id), reply_markup=reply_markup)

    def failed(self, error: str) -> str:
        """«Not delivered: <error>» with the local time."""
        return t(self.lang, "relay.failed", error=error, time=self.time())

    def time(self) -> str:
        return self.sla.clock().astimezone(self.sla.hours.tz).strftime(t(self.lang, "relay.time"))
