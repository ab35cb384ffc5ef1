"""The aiogram ``Bot`` for any Bot API server, with flood-wait retries on the session."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import structlog
from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.exceptions import TelegramAPIError, TelegramNetworkError, TelegramRetryAfter
from aiogram.methods import Response, TelegramMethod
from aiogram.methods.base import TelegramType

from bot import metrics

log = structlog.get_logger(__name__)

# pydantic caches parametrised generics in a WeakValueDictionary only, so aiogram's per-call
# ``Response[ReturnType]`` is rebuilt (~15 ms of schema work) whenever it was garbage-collected.
_RESPONSE_TYPES: dict[Any, type] = {}


def _pin(returning: Any) -> None:
    if returning not in _RESPONSE_TYPES:
        _RESPONSE_TYPES[returning] = Response[returning]  # type: ignore[valid-type]


class PinResponseTypes(BaseRequestMiddleware):
    """Keeps every ``Response[ReturnType]`` alive so each is built once per process."""

    async def __call__(
        self, make_request: NextRequestMiddlewareType[TelegramType], bot: Bot, method: TelegramMethod[TelegramType]
    ) -> Response[TelegramType]:
        _pin(method.__returning__)
        return await make_request(bot, method)


class Reached(BaseRequestMiddleware):
    """Notes every answer of the Bot API (an error answer too: Telegram was reached) for ``/readyz`` and ``/metrics``."""

    async def __call__(
        self, make_request: NextRequestMiddlewareType[TelegramType], bot: Bot, method: TelegramMethod[TelegramType]
    ) -> Response[TelegramType]:
        try:
            response = await make_request(bot, method)
        except TelegramNetworkError:
            raise
        except TelegramAPIError:
            metrics.reached()
            raise
        metrics.reached()
        return response


_on_leaving: ContextVar[Callable[[], None] | None] = ContextVar("on_leaving", default=None)


def on_leaving(callback: Callable[[], None]) -> None:
    """Call ``callback`` as the current task's next Bot API request leaves (after whatever prepared it: a
    PDF rendered, a file read), e.g. to start counting a rate limit's grant from the moment it really went."""
    _on_leaving.set(callback)


class Leaving(BaseRequestMiddleware):
    """Runs the callback that :func:`on_leaving` set, just before the request is made."""

    async def __call__(
        self, make_request: NextRequestMiddlewareType[TelegramType], bot: Bot, method: TelegramMethod[TelegramType]
    ) -> Response[TelegramType]:
        callback = _on_leaving.get()
        if callback is not None:
            callback()
        return await make_request(bot, method)


async def call_once(bot: Bot, method: TelegramMethod[TelegramType]) -> TelegramType:
    """One request, without the session's flood-wait retries: for a caller that waits a 429 out itself (the send outbox)."""
    _pin(method.__returning__)
    return await Reached()(bot.session.make_request, bot, method)


class RetryAfterMiddleware(BaseRequestMiddleware):
    """Waits ``retry_after`` on a 429 and repeats the call: a flood wait means it was not executed."""

    def __init__(self, max_attempts: int = 5, max_wait: float = 120.0) -> None:
        self.max_attempts = max_attempts
        self.max_wait = max_wait

    async def __call__(
        self, make_request: NextRequestMiddlewareType[TelegramType], bot: Bot, method: TelegramMethod[TelegramType]
    ) -> Response[TelegramType]:
        waited = 0.0
        for attempt in range(1, self.max_attempts + 1):
            try:
                return await make_request(bot, method)
            except TelegramRetryAfter as exc:
                if attempt == self.max_attempts or waited + exc.retry_after > self.max_wait:
                    raise
                log.warning("telegram.flood_wait", method=type(method).__name__, retry_after=exc.retry_after, attempt=attempt)
                waited += exc.retry_after
                await asyncio.sleep(exc.retry_after)
        raise AssertionError("unreachable")


def create_bot(token: str, api_url: str, *, retry_flood: bool = True) -> Bot:
    """A Bot speaking HTML to ``api_url`` (api.telegram.org, a local Bot API server or the sandbox)."""
    session = AiohttpSession(api=TelegramAPIServer.from_base(api_url))
    session.middleware(PinResponseTypes())
    session.middleware(Reached())
    if retry_flood:
        session.middleware(RetryAfterMiddleware())
    session.middleware(Leaving())  # innermost: right before each request
    return Bot(token, session=session, default=DefaultBotProperties(parse_mode=ParseMode.HTML, link_preview_is_disabled=True))
