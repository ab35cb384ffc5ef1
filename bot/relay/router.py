"""Operator-chat handlers (and buyers' edits): thin, they hand the update to the relay's parts."""
from __future__ import annotations

from aiogram import F, Router
from aiogram.enums import ChatType
from aiogram.types import CallbackQuery, Message

from bot.relay import commands
from bot.relay.card import RelayCb
from bot.relay.service import RelayService


def in_operator_chat(message: Message, relay: RelayService) -> bool:
    """Only the configured operator groups talk to buyers."""
    return message.chat.id in relay.chat.chat_ids


async def operator_message(message: Message, relay: RelayService) -> None:
    await relay.managers.on_message(message)


async def operator_edit(message: Message, relay: RelayService) -> None:
    await relay.managers.on_edit(message)


async def card_button(query: CallbackQuery, callback_data: RelayCb, relay: RelayService) -> None:
    if isinstance(query.message, Message):
        await relay.actions.button(query.message, query.from_user, callback_data)
    await query.answer()


async def buyer_edit(message: Message, relay: RelayService) -> None:
    await relay.buyers.on_edit(message)


def create_router() -> Router:
    """The relay's router (one per dispatcher); include it before the journey's catch-all."""
    router = Router(name="relay")
    router.include_router(commands.create_router(in_operator_chat))  # before the operator chat's messages
    router.edited_message.register(buyer_edit, F.chat.type == ChatType.PRIVATE)
    router.callback_query.register(card_button, RelayCb.filter())
    messages = Router(name="relay.messages")
    messages.message.register(operator_message, in_operator_chat)
    messages.edited_message.register(operator_edit, in_operator_chat)
    router.include_router(messages)
    return router
