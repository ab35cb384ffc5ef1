"""Operator-chat commands, parsed by aiogram's filters: ``/stats``, ``/templates``, ``/reload``; any other
command (``/price``, ``/close``, a template…) acts on the lead of the topic or of the replied-to message."""
from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog
from aiogram import BaseMiddleware, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot.relay.outbound import internal_note
from bot.texts import t

if TYPE_CHECKING:
    from bot.relay.service import RelayService

log = structlog.get_logger(__name__)

ANY_COMMAND = re.compile(r".*")


def is_command(message: Message) -> bool:
    """A text command from a person (a ``//`` note is none)."""
    user = message.from_user
    return bool(message.text and message.text.startswith("/") and internal_note(message) is None and user and not user.is_bot)


class MembersOnly(BaseMiddleware):
    """Commands are taken only from members of the operator group they are sent in; others are logged and dropped."""

    async def __call__(self, handler: Callable[[Message, dict[str, Any]], Awaitable[Any]], event: Message, data: dict[str, Any]) -> Any:
        relay: RelayService = data["relay"]
        if not await relay.chat.is_member(event.chat.id, event.from_user.id):
            log.warning("relay.command_refused", user_id=event.from_user.id, command=event.text.split(maxsplit=1)[0])
            return None
        return await handler(event, data)


async def stats(message: Message, relay: RelayService) -> None:
    await relay.chat.reply(message, await relay.chat.sla.stats())


async def templates(message: Message, relay: RelayService) -> None:
    await relay.chat.reply(message, relay.actions.templates())


async def reload(message: Message, relay: RelayService) -> None:
    chat = relay.chat
    allowed = message.from_user.id in chat.settings.admin_ids
    await chat.reply(message, await relay.actions.reload() if allowed else t(chat.lang, "relay.admin_only"))


async def lead_command(message: Message, command: CommandObject, relay: RelayService) -> None:
    resolved = await relay.topics.lead_of(message)
    if resolved is None:
        await relay.chat.reply(message, t(relay.chat.lang, "relay.not_a_lead"))
    else:
        await relay.actions.act(resolved[1], command.command.lower(), origin=message, manager=message.from_user)


async def for_another_bot(message: Message) -> None:
    """``/command@otherbot``: not ours, and not a message for the buyer either."""


def create_router(in_operator_chat: Callable[..., bool]) -> Router:
    router = Router(name="relay.commands")
    router.message.filter(in_operator_chat, is_command)
    router.message.middleware(MembersOnly())
    router.message.register(stats, Command("stats", ignore_case=True))
    router.message.register(templates, Command("templates", ignore_case=True))
    router.message.register(reload, Command("reload", ignore_case=True))
    router.message.register(lead_command, Command(ANY_COMMAND))
    router.message.register(for_another_bot)
    return router
