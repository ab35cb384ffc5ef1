"""Private-chat handlers of the lead journey: parse the update, call :class:`JourneyService`."""
from __future__ import annotations

from aiogram import F, Router
from aiogram.enums import ChatType
from aiogram.filters import CommandObject, CommandStart, ExceptionTypeFilter
from aiogram.types import CallbackQuery, ErrorEvent, Message

from bot.inbound import Inbound, Visitor
from bot.journey.keyboards import QuizCb
from bot.journey.service import JourneyService
from bot.keyboards import ActionCb
from bot.messenger import BuyerUnreachable


async def start(message: Message, command: CommandObject, journey: JourneyService) -> None:
    await journey.start(Visitor.of(message.from_user), Inbound.of(message), command.args)


async def next_step(query: CallbackQuery, callback_data: ActionCb, journey: JourneyService) -> None:
    await query.answer()
    await journey.action(Visitor.of(query.from_user), callback_data.action)


async def quiz_pick(query: CallbackQuery, callback_data: QuizCb, journey: JourneyService) -> None:
    alert = await journey.quiz_pick(Visitor.of(query.from_user), query.message.message_id, callback_data.question, callback_data.option)
    await query.answer(alert)


async def contact(message: Message, journey: JourneyService) -> None:
    await journey.on_contact(Visitor.of(message.from_user), Inbound.of(message))


async def anything_else(message: Message, journey: JourneyService) -> None:
    await journey.on_message(Visitor.of(message.from_user), Inbound.of(message))


async def buyer_unreachable(event: ErrorEvent) -> bool:
    """Already recorded on the lead by the messenger; nothing else to do."""
    return True


def create_router() -> Router:
    """The journey's router (one per dispatcher); its catch-all handler goes last."""
    router = Router(name="journey")
    router.message.filter(F.chat.type == ChatType.PRIVATE)
    router.callback_query.filter(F.message.chat.type == ChatType.PRIVATE)
    router.message.register(start, CommandStart())
    router.callback_query.register(next_step, ActionCb.filter())
    router.callback_query.register(quiz_pick, QuizCb.filter())
    router.message.register(contact, F.contact)
    router.message.register(anything_else)
    router.errors.register(buyer_unreachable, ExceptionTypeFilter(BuyerUnreachable))
    return router
