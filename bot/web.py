"""The service's own HTTP server: the webhook routes the features hand in, guarded by the secret, and the
operations endpoints (:mod:`bot.ops`).

Every webhook body is read by :mod:`bot.bodies` (size, depth, text bounded): a body no sender would
send gets a 4xx with the reason, never a 500.
"""
from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from bot.bodies import MAX_BODY

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


def create_web_app(secret: str | None, routes: list[tuple[str, str, Handler]]) -> web.Application:
    """An aiohttp app; ``routes`` are ``(method, path, handler)``, and paths with ``{secret}`` are guarded."""
    app = web.Application(client_max_size=MAX_BODY)
    for method, path, handler in routes:
        app.router.add_route(method, path, secret_guard(secret, handler) if "{secret}" in path else handler)
    return app
