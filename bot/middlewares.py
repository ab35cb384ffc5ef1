"""Update middlewares."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from weakref import WeakValueDictionary

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject


class PerChatOrder(BaseMiddleware):
    """Handles one chat's updates one at a time, in arrival order; different chats run in parallel.

    Keeps a buyer's messages in order (relay, notes) and their state free of races, and knows
    when no update is being handled (graceful shutdown, tests).
    """

    def __init__(self) -> None:
        self._locks: WeakValueDictionary[int, asyncio.Lock] = WeakValueDictionary()
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def __call__(
        self, handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]], event: TelegramObject, data: dict[str, Any]
    ) -> Any:
        chat = data.get("event_chat")
        user = data.get("event_from_user")
        key = chat.id if chat is not None else user.id if user is not None else 0
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        self._active += 1
        self._idle.clear()
        try:
            async with lock:
                return await handler(event, data)
        finally:
            self._active -= 1
            if not self._active:
                self._idle.set()

    async def idle(self) -> None:
        """Wait until no update is being handled."""
        await self._idle.wait()
