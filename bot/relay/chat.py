"""The operator chat as every part of the relay sees it: where it is, who works in it, how to answer there."""
from __future__ import annotations

import time

from aiogram.enums import ChatMemberStatus
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest
from aiogram.types import InlineKeyboardMarkup, Message, ReplyParameters, User
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.journal import Journal
from bot.messenger import Messenger
from bot.quiz import Quiz
from bot.relay.config import Roster
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


class OperatorChat:
    def __init__(self, settings: Settings, db: async_sessionmaker[AsyncSession], journal: Journal, messenger: Messenger,
                 quiz: Quiz, roster: Roster, sla: Sla) -> None:
        self.settings = settings
        self.chat_id = settings.operator_chat_id
        self.lang = settings.default_language
        self.db = db
        self.journal = journal
        self.messenger = messenger
        self.bot = messenger.bot
        self.quiz = quiz
        self.roster = roster  # replaced by /reload
        self.sla = sla
        self._members: dict[int, float] = {}

    def manager_name(self, user: User) -> str:
        operator = self.roster.by_tg(user.id)
        return operator.name if operator else user.full_name

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

    async def reply(self, origin: Message, text: str, reply_markup: InlineKeyboardMarkup | None = None) -> None:
        """Answer a manager's message (or button) where it is."""
        await self.bot.send_message(self.chat_id, text, message_thread_id=origin.message_thread_id if origin.is_topic_message else None,
                                    reply_parameters=replying_to(origin.message_id), reply_markup=reply_markup)

    def failed(self, error: str) -> str:
        """«Not delivered: <error>» with the local time."""
        return t(self.lang, "relay.failed", error=error, time=self.time())

    def time(self) -> str:
        return self.sla.clock().astimezone(self.sla.hours.tz).strftime(t(self.lang, "relay.time"))
