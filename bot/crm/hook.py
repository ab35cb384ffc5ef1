"""The Chats API hook: a manager's reply in amoCRM's chat panel, checked and stored before it is answered.

``POST /webhooks/amojo/{scope_id}``: the ``X-Signature`` (HMAC-SHA1 of the body with the channel secret) is
checked in constant time (bad or missing: 401), a hook older than 15 minutes (its ``time``) is refused the
same way, a body that is no message hook (or one its delivery could not use) gets a 400 with the reason, and
the reply is stored (``amojo_replies``, one per amoCRM message id) before the 200; nothing is sent for a
refused hook. :mod:`bot.crm.replies` delivers it at once, in the background (after the buyer's earlier replies, if some are
not finished).
"""
from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import structlog
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import bodies
from bot.bodies import BadBody
from bot.crm import chats
from bot.crm.amojo import DATE_VALID_SECONDS, hook_signed
from bot.crm.models import AmojoReply
from bot.db.base import utcnow
from bot.web import error

log = structlog.get_logger(__name__)

HOOK_PATH = "/webhooks/amojo/{scope_id}"
ID_LENGTH = 64  # amoCRM's message ids (UUIDs) and our conversation ids fit the columns (``amojo_replies``)


def _shape_problem(message: dict[str, Any], sent_at: float, message_id: str, conversation: str) -> str | None:
    """What in a parsed hook the delivery could not use (None: nothing), so a stored reply never fails on its shape."""
    if not math.isfinite(sent_at):
        return "time must be a number"
    if len(message_id) > ID_LENGTH or len(conversation) > ID_LENGTH:
        return f"message.message.id and message.conversation.client_id must be at most {ID_LENGTH} characters"
    content, sender = message["message"], message.get("sender") or {}
    if not isinstance(content, dict) or not isinstance(sender, dict):
        return "message.message and message.sender must be objects"
    wrong = [f"message.message.{name}" for name in ("type", "text", "media", "file_name") if not isinstance(content.get(name) or "", str)]
    wrong += ["message.sender.name"] if not isinstance(sender.get("name") or "", str) else []
    return f"{', '.join(wrong)} must be text" if wrong else None


def hook_handler(db: async_sessionmaker[AsyncSession], secret: str, scope: Callable[[], Awaitable[str | None]],
                 deliver: Callable[[AmojoReply], None], clock: Callable[[], datetime] = utcnow,
                 ) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The hook's handler; ``scope`` is the connected channel's ``scope_id``, ``deliver`` starts a stored reply's delivery."""
    async def handle(request: web.Request) -> web.Response:
        try:
            body = await bodies.read_raw(request)
        except BadBody as exc:
            return error(exc.status, str(exc))
        if not hook_signed(secret, body, request.headers.get("X-Signature")):
            log.warning("amojo.hook_refused", reason="bad or missing X-Signature")
            return error(401, "bad or missing X-Signature")
        try:
            hook = bodies.parse_json(body)  # bounded in depth, its text cleaned, like every webhook body
            message = hook["message"]
            message_id, conversation = str(message["message"]["id"]), str(message["conversation"]["client_id"])
            sent_at = float(hook.get("time") or message.get("timestamp") or 0)
        except BadBody as exc:
            return error(400, str(exc))
        except (ValueError, KeyError, TypeError, OverflowError):
            return error(400, "not a Chats API message hook")
        if (problem := _shape_problem(message, sent_at, message_id, conversation)) is not None:
            return error(400, f"not a Chats API message hook: {problem}")
        if abs(clock().timestamp() - sent_at) > DATE_VALID_SECONDS:
            log.warning("amojo.hook_refused", reason="older than 15 minutes (a replay?)", message_id=message_id)
            return error(401, "the hook is older than 15 minutes")
        if request.match_info["scope_id"] != await scope():
            return error(404, "unknown scope_id")
        reply = await chats.keep_reply(db, message_id, conversation, message, clock())
        if reply is not None and reply.claimed_at is not None:
            deliver(reply)
        return web.json_response({"ok": True})

    return handle
