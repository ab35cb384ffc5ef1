"""The Chats API hook: a manager's reply in amoCRM's chat panel, checked and stored before it is answered.

``POST /webhooks/amojo/{scope_id}``: the ``X-Signature`` (HMAC-SHA1 of the body with the channel secret) is
checked in constant time (bad or missing: 401), a hook older than 15 minutes (its ``time``) is refused the
same way, and the reply is stored (``amojo_replies``, one per amoCRM message id) before the 200; nothing
is sent for a refused hook. :mod:`bot.crm.replies` delivers it at once, in the background (after the buyer's earlier replies, if some are
not finished).
"""
from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime

import structlog
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.crm import chats
from bot.crm.amojo import DATE_VALID_SECONDS, hook_signed
from bot.crm.models import AmojoReply
from bot.db.base import utcnow

log = structlog.get_logger(__name__)

HOOK_PATH = "/webhooks/amojo/{scope_id}"


def hook_handler(db: async_sessionmaker[AsyncSession], secret: str, scope: Callable[[], Awaitable[str | None]],
                 deliver: Callable[[AmojoReply], None], clock: Callable[[], datetime] = utcnow,
                 ) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The hook's handler; ``scope`` is the connected channel's ``scope_id``, ``deliver`` starts a stored reply's delivery."""
    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        if not hook_signed(secret, body, request.headers.get("X-Signature")):
            log.warning("amojo.hook_refused", reason="bad or missing X-Signature")
            return web.json_response({"ok": False, "error": "bad or missing X-Signature"}, status=401)
        try:
            hook = json.loads(body)
            message = hook["message"]
            message_id, conversation = str(message["message"]["id"]), str(message["conversation"]["client_id"])
            sent_at = float(hook.get("time") or message.get("timestamp") or 0)
        except (ValueError, KeyError, TypeError):
            return web.json_response({"ok": False, "error": "not a Chats API message hook"}, status=400)
        if abs(clock().timestamp() - sent_at) > DATE_VALID_SECONDS:
            log.warning("amojo.hook_refused", reason="older than 15 minutes (a replay?)", message_id=message_id)
            return web.json_response({"ok": False, "error": "the hook is older than 15 minutes"}, status=401)
        if request.match_info["scope_id"] != await scope():
            return web.json_response({"ok": False, "error": "unknown scope_id"}, status=404)
        reply = await chats.keep_reply(db, message_id, conversation, message, clock())
        if reply is not None and reply.claimed_at is not None:
            deliver(reply)
        return web.json_response({"ok": True})

    return handle
