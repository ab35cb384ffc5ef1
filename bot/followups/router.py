"""Follow-up handlers: the survey's rating buttons and the buyer's reply to «what would you change?»."""
from __future__ import annotations

from aiogram import F, Router
from aiogram.dispatcher.event.bases import SkipHandler
from aiogram.enums import ChatType
from aiogram.types import CallbackQuery, Message

from bot.followups.service import FollowUps
from bot.followups.survey import SurveyCb


async def rated(query: CallbackQuery, callback_data: SurveyCb, followups: FollowUps) -> None:
    message_id = query.message.message_id if query.message else None
    await query.answer(await followups.survey.rate(query.from_user.id, callback_data.followup, callback_data.rating, message_id))


async def replied(message: Message, followups: FollowUps) -> None:
    """A reply to one of the bot's messages: the survey's comment, else it goes on to the other handlers."""
    if not await followups.survey.comment(message.from_user.id, message.reply_to_message.message_id, message.text):
        raise SkipHandler


def create_router() -> Router:
    """The follow-ups' router (one per dispatcher); include it before the relay and the journey's catch-all."""
    router = Router(name="followups")
    router.callback_query.register(rated, SurveyCb.filter(), F.message.chat.type == ChatType.PRIVATE)
    router.message.register(replied, F.chat.type == ChatType.PRIVATE, F.reply_to_message.from_user.is_bot, F.text)
    return router
