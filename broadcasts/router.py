"""Broadcast handlers: ``/stop`` and the buttons under broadcast messages (buyers), plus the admin UI."""
from __future__ import annotations

from aiogram import F, Router
from aiogram.enums import ChatType
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message

from bot.inbound import Visitor
from bot.ports import Journey
from bot.texts import normalise_language, t
from broadcasts import admin
from broadcasts.content import ACTIONS, UNSUBSCRIBE, BroadcastCb
from broadcasts.service import Broadcasts


async def stop(message: Message, broadcasts: Broadcasts) -> None:
    await broadcasts.unsubscribe(message.from_user.id, via="command")


async def tracked_button(query: CallbackQuery, callback_data: BroadcastCb, broadcasts: Broadcasts, journey: Journey) -> None:
    """Count the press, then do what the button says: unsubscribe, or the journey's next step."""
    if callback_data.broadcast == 0:
        await query.answer(t(normalise_language(query.from_user.language_code), "broadcasts.preview_click"))
        return
    await query.answer()
    await broadcasts.click(query.from_user.id, callback_data.broadcast, callback_data.action)
    if callback_data.action == UNSUBSCRIBE:
        await broadcasts.unsubscribe(query.from_user.id, via="button", broadcast_id=callback_data.broadcast)
    elif callback_data.action in ACTIONS:
        await journey.action(Visitor.of(query.from_user), callback_data.action)


def create_router() -> Router:
    """Broadcasts' router (one per dispatcher); include it before the journey's catch-all."""
    router = Router(name="broadcasts")
    router.include_router(admin.create_router())
    router.message.register(stop, Command("stop"), F.chat.type == ChatType.PRIVATE)
    router.callback_query.register(tracked_button, BroadcastCb.filter(), F.message.chat.type == ChatType.PRIVATE)
    return router
