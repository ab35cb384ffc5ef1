"""Update middlewares."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from weakref import WeakValueDictionary

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject, Update


class PerChatOrder(BaseMiddleware):
    """Handles one chat's updates one at a time, in arrival order; different chats run in parallel.

    Keeps a buyer's messages in order (relay, notes) and their quiz state free of races.
    """

    def __init__(self) -> None:
        self._locks: WeakValueDictionary[int, asyncio.Lock] = WeakValueDictionary()

    async def __call__(
        self, handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]], event: TelegramObject, data: dict[str, Any]
    ) -> Any:
        chat = data.get("event_chat")
        user = data.get("event_from_user")
        key = chat.id if chat is not None else user.id if user is not None else None
        if key is None or not isinstance(event, Update):
            return await handler(event, data)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        async with lock:
            return await handler(event, data)
