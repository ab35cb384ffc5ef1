"""The service's own HTTP server: inbound webhooks (Marquiz, amoCRM, Telegram) and a health check.

Every body is read by :mod:`bot.inbound` (size, depth, text bounded); a body no sender would send
gets a 4xx with the reason, never a 500.
"""
from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable

import structlog
from aiogram import Bot, Dispatcher
from aiogram.types import Update
from aiohttp import web
from pydantic import ValidationError

from bot import inbound
from bot.inbound import BadBody
from bot.journey.intake import IntakeService

log = structlog.get_logger(__name__)

TELEGRAM_SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, reason: str) -> web.Response:
    return web.json_response({"ok": False, "error": reason}, status=status)


def secret_guard(secret: str | None, handler: Handler) -> Handler:
    """Serve ``handler`` only when the ``{secret}`` path segment matches (compared in constant time)."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        given = request.match_info.get("secret", "").encode()
        if not secret or not hmac.compare_digest(given, secret.encode()):
            return error(404, "not found")
        return await handler(request)

    return guarded


def marquiz_handler(intake: IntakeService, start_link: Callable[[str], str]) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        try:
            result = await intake.accept_marquiz(await inbound.read(request))
        except BadBody as exc:
            log.warning("marquiz.rejected", reason=str(exc), size=request.content_length)
            return error(exc.status, str(exc))
        return web.json_response(
            {"ok": True, "lead_id": result.lead_id, "duplicate": result.duplicate, "start_link": start_link(result.token)}
        )

    return handle


async def read_update(request: web.Request, bot: Bot) -> Update:
    """The Telegram update in a webhook request, read like every webhook body and validated; else :class:`BadBody`."""
    body = await inbound.read(request, accept=(inbound.JSON,))
    try:
        return Update.model_validate(body.data, context={"bot": bot})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise BadBody(f"not a Telegram update: {'.'.join(map(str, first['loc'])) or 'update'}: {first['msg']}") from None


def telegram_handler(dp: Dispatcher, bot: Bot, secret_token: str) -> Handler:
    """``POST /webhooks/telegram``: the secret token header compared in constant time (401), the update read by
    :func:`read_update` (4xx with the reason), then handled in the background as aiogram's own handler does."""
    running: set[asyncio.Task[object]] = set()

    def finished(task: asyncio.Task[object]) -> None:
        running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("telegram.update_failed", exc_info=task.exception())

    async def handle(request: web.Request) -> web.Response:
        given = request.headers.get(TELEGRAM_SECRET_HEADER, "").encode()
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


async def health(_: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def create_web_app(secret: str | None, routes: list[tuple[str, str, Handler]]) -> web.Application:
    """An aiohttp app; ``routes`` are ``(method, path, handler)``, and paths with ``{secret}`` are guarded."""
    app = web.Application(client_max_size=inbound.MAX_BODY)
    app.router.add_get("/healthz", health)
    for method, path, handler in routes:
        app.router.add_route(method, path, secret_guard(secret, handler) if "{secret}" in path else handler)
    return app
