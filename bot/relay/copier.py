"""Copying messages between a buyer's chat and the operator chat: albums, edits, and texts over Telegram's limits."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError
from aiogram.methods import (
    CopyMessage, CopyMessages, EditMessageCaption, EditMessageText, ForwardMessage, ForwardMessages, SendMessage, TelegramMethod,
)
from aiogram.types import Message

from bot.inbound import Inbound
from bot.relay.chat import replying_to, unmodified
from bot.sender import GaveUp, Unknown

TEXT_LIMIT, CAPTION_LIMIT = 4096, 1024


def utf16_len(text: str) -> int:
    """Length as Telegram counts it."""
    return len(text.encode("utf-16-le")) // 2


def cut(text: str, limit: int) -> tuple[str, str]:
    """The beginning of ``text`` that fits ``limit`` UTF-16 units (ending at a line break or space if one is near), and the rest."""
    units = 0
    for end, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            break
    else:
        return text, ""
    space = max(text.rfind("\n", 0, end), text.rfind(" ", 0, end))
    if space > end // 2:
        end = space + 1
    return text[:end].rstrip(), text[end:].lstrip()


def chunks(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """``text`` in parts of at most ``limit`` UTF-16 units."""
    parts = []
    while text:
        part, text = cut(text, limit)
        if part:
            parts.append(part)
    return parts


#: Makes one Bot API call: the bot itself, or the send outbox's :meth:`bot.sender.Sender.call` (through outages).
Call = Callable[[TelegramMethod[Any]], Awaitable[Any]]


class Copier:
    """Copies through ``call`` (default: straight to the Bot API)."""

    def __init__(self, bot: Bot, call: Call | None = None) -> None:
        self.bot = bot
        self.call: Call = call or bot

    async def send_parts(self, chat_id: int, text: str, *, thread_id: int | None, reply_to: int | None) -> list[int]:
        """Send a long text as plain-text parts (the first one replying to ``reply_to``)."""
        ids = []
        for part in chunks(text):
            sent = await self.call(SendMessage(chat_id=chat_id, text=part, message_thread_id=thread_id,
                                               reply_parameters=replying_to(reply_to), parse_mode=None))
            ids.append(sent.message_id)
        return ids

    async def copy(self, messages: list[Inbound], chat_id: int, *, thread_id: int | None = None,
                   reply_to: int | None = None, forward: bool = False) -> list[tuple[int, int]]:
        """Copy (or forward) a message or an album; texts and captions over Telegram's limits follow as text parts.

        Returns ``(source message id, new message id)`` pairs.
        """
        first, source = messages[0], messages[0].chat_id
        if first.text is not None and utf16_len(first.text) > TEXT_LIMIT:
            return [(first.message_id, new) for new in await self.send_parts(chat_id, first.text, thread_id=thread_id, reply_to=reply_to)]
        too_long = not forward and any(m.caption and utf16_len(m.caption) > CAPTION_LIMIT for m in messages)
        ids = [message.message_id for message in messages]
        rest: dict[int, str] = {}  # caption text that did not fit, by source message
        if forward:
            copies: list[Any] = (
                [await self.call(ForwardMessage(chat_id=chat_id, from_chat_id=source, message_id=first.message_id, message_thread_id=thread_id))]
                if len(ids) == 1 else
                await self.call(ForwardMessages(chat_id=chat_id, from_chat_id=source, message_ids=ids, message_thread_id=thread_id)))
        elif len(ids) == 1:
            caption = None
            if too_long:  # the caption's beginning stays on the copy
                caption, rest[first.message_id] = cut(first.caption, CAPTION_LIMIT)
            copies = [await self.call(CopyMessage(chat_id=chat_id, from_chat_id=source, message_id=first.message_id,
                                                  message_thread_id=thread_id, reply_parameters=replying_to(reply_to),
                                                  caption=caption, parse_mode=None))]
        else:  # copyMessages can't shorten a caption: all of the album's captions follow as text
            rest = {message.message_id: message.caption for message in messages if too_long and message.caption}
            copies = await self.call(CopyMessages(chat_id=chat_id, from_chat_id=source, message_ids=ids, message_thread_id=thread_id,
                                                  remove_caption=True if too_long else None))
        pairs = list(zip(ids, (copy.message_id for copy in copies)))
        copied = dict(pairs)
        for message_id, text in rest.items():
            if text and message_id in copied:
                parts = await self.send_parts(chat_id, text, thread_id=thread_id, reply_to=copied[message_id])
                pairs += [(message_id, new) for new in parts]
        return pairs

    async def edit(self, chat_id: int, message_id: int, source: Message) -> str | None:
        """Mirror an edit of ``source`` onto its copy; None when done, else why it could not be."""
        try:
            if source.text is not None:
                if utf16_len(source.text) > TEXT_LIMIT:
                    return "message is too long"
                await self.call(EditMessageText(text=source.text, chat_id=chat_id, message_id=message_id, entities=source.entities,
                                                parse_mode=None))
            else:
                if source.caption and utf16_len(source.caption) > CAPTION_LIMIT:
                    return "message caption is too long"
                await self.call(EditMessageCaption(chat_id=chat_id, message_id=message_id, caption=source.caption,
                                                    caption_entities=source.caption_entities, parse_mode=None))
        except TelegramBadRequest as exc:
            return None if unmodified(exc) else exc.message
        except TelegramForbiddenError as exc:
            return exc.message
        except (GaveUp, Unknown) as exc:
            return str(exc)
        return None
