"""Operator-chat handlers (and buyers' edits): parse the update, call :class:`RelayService`."""
from __future__ import annotations

from aiogram import F, Router
from aiogram.enums import ChatType
from aiogram.types import CallbackQuery, Message

from bot.relay.card import RelayCb
from bot.relay.service import RelayService


def in_operator_chat(message: Message, relay: RelayService) -> bool:
    """Only the configured operator chat talks to buyers."""
    return relay.chat_id is not None and message.chat.id == relay.chat_id


async def operator_message(message: Message, relay: RelayService) -> None:
    await relay.on_operator_message(message)


async def operator_edit(message: Message, relay: RelayService) -> None:
    await relay.on_operator_edit(message)


async def card_button(query: CallbackQuery, callback_data: RelayCb, relay: RelayService) -> None:
    await relay.on_button(query, callback_data)


async def buyer_edit(message: Message, relay: RelayService) -> None:
    await relay.on_buyer_edit(message)


def create_router() -> Router:
    """The relay's router (one per dispatcher); include it before the journey's catch-all."""
    router = Router(name="relay")
    router.message.register(operator_message, in_operator_chat)
    router.edited_message.register(operator_edit, in_operator_chat)
    router.edited_message.register(buyer_edit, F.chat.type == ChatType.PRIVATE)
    router.callback_query.register(card_button, RelayCb.filter())
    return router
