"""The Telegram webhook (``POST /webhooks/telegram``, when ``PUBLIC_URL`` is set): an update in, handled by the dispatcher.

:func:`read_update` reads the body like every webhook body (:mod:`bot.bodies`) and validates it, so a
malformed or hostile update is a 4xx with the reason, never a 500.
"""
from __future__ import annotations

import asyncio
import hmac

import structlog
from aiogram import Bot, Dispatcher
from aiogram.types import Update
from aiohttp import web
from pydantic import ValidationError

from bot import bodies
from bot.bodies import BadBody
from bot.web import Handler, error

log = structlog.get_logger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
TELEGRAM_WEBHOOK_PATH = "/webhooks/telegram"


async def read_update(request: web.Request, bot: Bot) -> Update:
    """The Telegram update in a webhook request, read like every webhook body and validated; else :class:`BadBody`."""
    body = await bodies.read(request, accept=(bodies.JSON,))
    try:
        return Update.model_validate(body.data, context={"bot": bot})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise BadBody(f"not a Telegram update: {'.'.join(map(str, first['loc'])) or 'update'}: {first['msg']}") from None


def telegram_handler(dp: Dispatcher, bot: Bot, secret_token: str) -> Handler:
    """The secret token header compared in constant time (401), the update read by :func:`read_update` (4xx with
    the reason), then handled in the background as aiogram's own webhook handler does."""
    running: set[asyncio.Task[object]] = set()

    def finished(task: asyncio.Task[object]) -> None:
        running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("telegram.update_failed", exc_info=task.exception())

    async def handle(request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, secret_token.encode()):
            return error(401, "unauthorized")
        try:
            update = await read_update(request, bot)
        except BadBody as exc:
            log.warning("telegram.webhook_rejected", reason=str(exc), size=request.content_length)
            return error(exc.status, str(exc))
        task = asyncio.create_task(dp.feed_update(bot, update))
        running.add(task)
        task.add_done_callback(finished)
        return web.json_response({})

    return handle
