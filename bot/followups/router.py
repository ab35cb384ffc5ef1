"""Follow-up handlers: the survey's rating buttons, the reorder offer's buttons, the buyer's replies to the bot's questions,
``/remind`` and ``/upcoming``."""
from __future__ import annotations

from aiogram import F, Router
from aiogram.dispatcher.event.bases import SkipHandler
from aiogram.enums import ChatType
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, Message

from bot.config import Settings
from bot.followups.service import FollowUps
from bot.texts import t
from bot.followups.reorders import ReorderCb
from bot.followups.survey import SurveyCb
from bot.followups.upcoming import UpcomingCb, cancel, overview


async def rated(query: CallbackQuery, callback_data: SurveyCb, followups: FollowUps) -> None:
    message_id = query.message.message_id if query.message else None
    await query.answer(await followups.survey.rate(query.from_user.id, callback_data.followup, callback_data.rating, message_id))


async def reorder(query: CallbackQuery, callback_data: ReorderCb, followups: FollowUps) -> None:
    """«Повторить заказ» or «Пока не нужно» under the reorder offer."""
    message_id = query.message.message_id if query.message else None
    await query.answer(await followups.reorders.answer(query.from_user.id, callback_data.followup, callback_data.again, message_id))


async def replied(message: Message, followups: FollowUps) -> None:
    """A reply to one of the bot's questions (the survey's comment, data a stage requires), else on to the other handlers."""
    user, replied_to = message.from_user.id, message.reply_to_message.message_id
    if not (await followups.survey.comment(user, replied_to, message.text) or await followups.required.answer(user, replied_to, message.text)):
        raise SkipHandler


def in_operator_chat(message: Message, settings: Settings) -> bool:
    return message.chat.id in settings.operator_chats


async def remind(message: Message, command: CommandObject, followups: FollowUps) -> None:
    """``/remind <when> <what>`` in a lead's topic."""
    lead = await followups.topic.lead_in_topic(message) if followups.topic else None
    await message.reply(await followups.reminders.add(lead, message.chat.id, message.message_id, message.from_user.full_name,
                                                      command.args))


def is_admin(event: Message | CallbackQuery, settings: Settings) -> bool:
    return event.from_user is not None and event.from_user.id in settings.admin_ids


async def show_upcoming(message: Message, followups: FollowUps) -> None:
    """``/upcoming`` (admins): stage messages, surveys, reminders and tasks still to come, each with a cancel button."""
    text, markup = await overview(followups.db, followups.lang, followups.reminders.tz)
    await message.answer(text, reply_markup=markup)


async def cancel_upcoming(query: CallbackQuery, callback_data: UpcomingCb, followups: FollowUps) -> None:
    done = await cancel(followups.db, callback_data.followup, query.from_user.full_name)
    await query.answer(t(followups.lang, "followups.upcoming.cancelled" if done else "followups.upcoming.gone", id=callback_data.followup))
    if isinstance(query.message, Message):
        text, markup = await overview(followups.db, followups.lang, followups.reminders.tz)
        await query.message.edit_text(text, reply_markup=markup)


def create_router() -> Router:
    """The follow-ups' router (one per dispatcher); include it before the relay and the journey's catch-all."""
    router = Router(name="followups")
    router.callback_query.register(rated, SurveyCb.filter(), F.message.chat.type == ChatType.PRIVATE)
    router.callback_query.register(reorder, ReorderCb.filter(), F.message.chat.type == ChatType.PRIVATE)
    router.message.register(remind, Command("remind"), in_operator_chat)
    router.message.register(show_upcoming, Command("upcoming"), is_admin)
    router.callback_query.register(cancel_upcoming, UpcomingCb.filter(), is_admin)
    router.message.register(replied, F.chat.type == ChatType.PRIVATE, F.reply_to_message.from_user.is_bot, F.text)
    return router
