"""The Telegram webhook (``POST /webhooks/telegram``, when ``PUBLIC_URL`` is set): an update in, stored in the inbox.

:func:`read_update` reads the body like every webhook body (:mod:`bot.bodies`) and validates it, so a
malformed or hostile update is a 4xx with the reason, never a 500.
"""
from __future__ import annotations

import hmac
from typing import Any

import structlog
from aiogram import Bot
from aiogram.types import Update
from aiohttp import web
from pydantic import ValidationError

from bot import bodies
from bot.bodies import BadBody
from bot.inbox import Inbox
from bot.web import Handler, error

log = structlog.get_logger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
TELEGRAM_WEBHOOK_PATH = "/webhooks/telegram"


async def read_update(request: web.Request, bot: Bot) -> Update:
    """The Telegram update in a webhook request, read like every webhook body and validated; else :class:`BadBody`."""
    body = await bodies.read(request, accept=(bodies.JSON,))
    if (where := _wide_number(body.data)) is not None:  # Telegram's ids and dates fit 64 bits, as do the columns they go to
        raise BadBody(f"not a Telegram update: {where or 'update'}: a number wider than 64 bits")
    try:
        return Update.model_validate(body.data, context={"bot": bot})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise BadBody(f"not a Telegram update: {'.'.join(map(str, first['loc'])) or 'update'}: {first['msg']}") from None


def _wide_number(value: Any, at: str = "") -> str | None:
    """Where in ``value`` an integer does not fit a signed 64-bit one (None: nowhere)."""
    if isinstance(value, int):
        return at if not -2**63 <= value < 2**63 else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return next((found for key, item in items if (found := _wide_number(item, f"{at}.{key}" if at else str(key))) is not None), None)


def telegram_handler(inbox: Inbox, bot: Bot, secret_token: str) -> Handler:
    """The secret token header compared in constant time (401), the update read by :func:`read_update` (4xx with
    the reason), then stored in the inbox before the 200 (503 when the database can't take it: Telegram retries)."""

    async def handle(request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, secret_token.encode()):
            return error(401, "unauthorized")
        try:
            update = await read_update(request, bot)
        except BadBody as exc:
            log.warning("telegram.webhook_rejected", reason=str(exc), size=request.content_length)
            return error(exc.status, str(exc))
        try:
            await inbox.accept([update])
        except Exception as exc:
            log.error("telegram.update_not_stored", update_id=update.update_id, error=f"{type(exc).__name__}: {exc}")
            return error(503, "the update could not be stored; retry later")
        return web.json_response({})

    return handle
