"""The survey after the test batch: a 1–5 rating with buttons, then «what would you change?» (optional free text).

The rating becomes journal events (the CRM outbox makes them a note, the configured field and, for 3 or less, an
urgent task for the responsible manager) and a notice in the lead's topic; a rating of 4–5 schedules the
"propose the main batch" nudge. The comment is the buyer's reply to the question (Telegram's force-reply), logged
as their message and written to the configured field.
"""
from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from aiogram.filters.callback_data import CallbackData
from aiogram.types import ForceReply, InlineKeyboardButton, InlineKeyboardMarkup
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import leads
from bot.db.models import Lead
from bot.followups import store
from bot.followups.buttons import ButtonFollowUp
from bot.followups.models import NUDGE, SURVEY, FollowUp
from bot.journal import TEST_BATCH_COMMENTED, TEST_BATCH_RATED, TEST_BATCH_UNHAPPY, Journal
from bot.messenger import BuyerUnreachable, Messenger
from bot.texts import t

UNHAPPY = 3  # this rating or lower: an urgent task


class SurveyCb(CallbackData, prefix="fus"):
    followup: int
    rating: int


def survey_keyboard(followup_id: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[[
        InlineKeyboardButton(text=str(n), callback_data=SurveyCb(followup=followup_id, rating=n).pack()) for n in range(1, 6)]])


class Survey(ButtonFollowUp):
    kind, field, already = SURVEY, "rating", "followups.survey.already"

    def __init__(self, db: async_sessionmaker[AsyncSession], journal: Journal, messenger: Messenger,
                 tell_managers: Callable[[Lead, str], Awaitable[None]], *, clock: Callable[[], datetime],
                 nudge_after: timedelta, lang: str) -> None:
        super().__init__(db, journal, messenger, tell_managers, clock=clock, lang=lang)
        self.nudge_after = nudge_after

    async def rate(self, tg_user_id: int, followup_id: int, rating: int, message_id: int | None) -> str:
        """The buyer tapped a rating; returns the text the button press is answered with."""
        return await self.press(tg_user_id, followup_id, rating, message_id) if 1 <= rating <= 5 else ""

    async def record(self, session: AsyncSession, lead: Lead, row: FollowUp, rating: int) -> None:
        await self.journal.event(session, lead, TEST_BATCH_RATED, rating=rating, test_batch_rating=str(rating))
        if rating <= UNHAPPY:
            await self.journal.event(session, lead, TEST_BATCH_UNHAPPY, rating=rating)
        else:
            now = self.clock()
            await store.schedule(session, lead_id=lead.id, kind=NUDGE, key=row.key.replace(SURVEY, NUDGE, 1),
                                 due_at=now + self.nudge_after, now=now, data={"rating": rating})

    def pressed_text(self, lead: Lead, rating: int) -> str:
        return t(lead.language, "followups.survey.rated", stars="⭐" * rating)

    def managers_text(self, rating: int) -> str:
        return t(self.lang, "followups.topic.unhappy" if rating <= UNHAPPY else "followups.topic.rated", rating=rating)

    async def after(self, lead: Lead, row: FollowUp, rating: int) -> str:
        """Ask what to change (a reply to that question is the comment)."""
        async with self.db.begin() as session:  # asked before it goes: a quick reply finds it
            if (asking := await store.get(session, row.id)) is not None:
                asking.data = {**asking.data, "comment_message_id": None}
        with contextlib.suppress(BuyerUnreachable):
            sent = await self.messenger.send_text(lead, t(lead.language, "followups.survey.comment"), reply_markup=ForceReply())
            async with self.db.begin() as session:
                if (asking := await store.get(session, row.id)) is not None and "comment" not in asking.data:
                    asking.data = {**asking.data, "comment_message_id": sent.message_id}
        return t(lead.language, "followups.survey.thanks")

    async def comment(self, tg_user_id: int, reply_to: int, text: str) -> bool:
        """A buyer's reply to the question; False if it answers something else."""
        async with self.db.begin() as session:
            lead = await leads.by_tg_user(session, tg_user_id, for_update=True)  # the lead first, as every writer here
            row = await store.survey_asking(session, lead.id, reply_to) if lead is not None else None
            if lead is None or row is None:
                return False
            row.data = {**row.data, "comment": text}
            await self.journal.message(session, lead, direction="in", author="buyer", author_name=lead.display_name, text=text,
                                       tg_chat_id=tg_user_id, meta={"survey": row.id})
            await self.journal.event(session, lead, TEST_BATCH_COMMENTED, comment=text, test_batch_comment=text)
        await self.tell_managers(lead, t(self.lang, "followups.topic.commented", comment=text))
        await self.messenger.send_text(lead, t(lead.language, "followups.survey.thanks"))
        return True
