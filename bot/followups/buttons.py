"""A follow-up the buyer answers with a button (the survey's rating, the reorder offer's choice): the first press is
recorded once with its consequences, the buttons give way, the managers are told in the topic, then the follow-up's
own next step."""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiogram.exceptions import TelegramAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import Lead
from bot.followups import store
from bot.followups.models import FollowUp
from bot.journal import Journal
from bot.messenger import Messenger
from bot.texts import t


class ButtonFollowUp(ABC):
    """A follow-up answered with a button; a subclass says what an answer records, shows and does next."""

    kind: str  # the follow-up kind the buttons belong to
    field: str  # the key of the answer in the row's data
    already: str  # the text key a second press is answered with

    def __init__(self, db: async_sessionmaker[AsyncSession], journal: Journal, messenger: Messenger,
                 tell_managers: Callable[[Lead, str], Awaitable[None]], *, clock: Callable[[], datetime], lang: str) -> None:
        self.db = db
        self.journal = journal
        self.messenger = messenger
        self.tell_managers = tell_managers
        self.clock = clock
        self.lang = lang  # the managers'

    async def press(self, tg_user_id: int, followup_id: int, answer: Any, message_id: int | None) -> str:
        """The buyer pressed ``answer`` on the message ``message_id``; returns the text the press is answered with."""
        async with self.db.begin() as session:
            if (found := await store.of_buyer(session, tg_user_id, followup_id, self.kind)) is None:
                return ""
            lead, row = found
            if self.field in row.data:
                return t(lead.language, self.already)
            row.data = {**row.data, self.field: answer}
            await self.record(session, lead, row, answer)
        if message_id is not None:
            with contextlib.suppress(TelegramAPIError):  # an old or deleted message: the answer still counts
                if (text := self.pressed_text(lead, answer)) is None:
                    await self.messenger.bot.edit_message_reply_markup(chat_id=lead.tg_user_id, message_id=message_id, reply_markup=None)
                else:
                    await self.messenger.bot.edit_message_text(text, chat_id=lead.tg_user_id, message_id=message_id)
        await self.tell_managers(lead, self.managers_text(answer))
        return await self.after(lead, row, answer)

    @abstractmethod
    async def record(self, session: AsyncSession, lead: Lead, row: FollowUp, answer: Any) -> None:
        """What the answer writes with it, in its transaction (journal events, the next follow-up)."""

    def pressed_text(self, lead: Lead, answer: Any) -> str | None:
        """The message's text in place of the buttons; None: the buttons are only removed."""
        return None

    @abstractmethod
    def managers_text(self, answer: Any) -> str:
        """The managers' notice in the lead's topic."""

    @abstractmethod
    async def after(self, lead: Lead, row: FollowUp, answer: Any) -> str:
        """The next step once recorded (a question, thanks); returns the text the press is answered with."""
