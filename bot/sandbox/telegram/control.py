"""The JSON control API: ``GET|POST /sandbox/<action>`` for out-of-process drivers.

Each action is the :class:`TelegramSandbox` method of the same name, called with
the JSON body (and/or query string) as keyword arguments; the answer is
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``.
Binary ``content`` for ``send_media`` / ``send_album`` items travels as
``content_base64``.  Predicates are Python-only.  Examples::

    POST /sandbox/add_user        {"user_id": 1, "first_name": "Ann"}
    POST /sandbox/send_text       {"user_id": 1, "text": "/start"}
    POST /sandbox/wait_for_messages {"chat_id": 1, "count": 1, "timeout": 5}
    POST /sandbox/drop_next       {"method": "sendMessage", "executed": true}
    POST /sandbox/outage          {"method": "sendMessage", "seconds": 30, "error_code": 429, "retry_after": 1}
    GET  /sandbox/calls?offset=0&method=sendMessage
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import inspect
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .errors import SandboxError

if TYPE_CHECKING:
    from .sandbox import TelegramSandbox

ACTIONS = (
    "add_user", "add_group", "block", "unblock", "deactivate", "join", "leave",
    "send_text", "send_media", "send_contact", "send_album", "edit_text", "click",
    "messages", "last", "topics", "reply_keyboard", "bot_commands", "wait_for_messages", "wait_for_call",
    "rate_limits", "fail_next", "drop_next", "outage", "set_delay",
)


class UnknownAction(Exception):
    """No control action of that name."""


def _decode_content(arguments: dict[str, Any]) -> dict[str, Any]:
    if "content_base64" in arguments:
        arguments["content"] = base64.b64decode(arguments.pop("content_base64"))
    return arguments


def _encode(value: Any) -> Any:
    """``json.dumps`` fallback for records and bytes."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"can't serialise {type(value).__name__}")


def _query_value(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


class ControlApi:
    """Serves :data:`ACTIONS` plus the ``calls``, ``callback_answers``, ``throttles`` and ``state`` reads."""

    def __init__(self, sandbox: TelegramSandbox) -> None:
        self.sandbox = sandbox

    async def handle(self, request: web.Request) -> web.Response:
        """aiohttp handler for ``/sandbox/{action}``."""
        action = request.match_info["action"]
        arguments = {key: _query_value(value) for key, value in request.query.items()}
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                return self._answer(400, {"ok": False, "error": "body must be a JSON object"})
            if not isinstance(body, dict):
                return self._answer(400, {"ok": False, "error": "body must be a JSON object"})
            arguments.update(body)
        try:
            result = await self._run(action, arguments)
        except UnknownAction as error:
            return self._answer(404, {"ok": False, "error": str(error)})
        except TimeoutError as error:
            return self._answer(408, {"ok": False, "error": str(error)})
        except (SandboxError, TypeError, ValueError, KeyError, binascii.Error) as error:
            return self._answer(400, {"ok": False, "error": f"{type(error).__name__}: {error}"})
        return self._answer(200, {"ok": True, "result": result})

    async def _run(self, action: str, arguments: dict[str, Any]) -> Any:
        sandbox = self.sandbox
        if action == "calls":
            offset, method = int(arguments.get("offset", 0)), arguments.get("method")
            return [call for call in sandbox.calls[offset:] if method is None or call.method == method]
        if action == "callback_answers":
            return sandbox.callback_answers
        if action == "throttles":
            return sandbox.throttles
        if action == "state":
            return {"bot": sandbox.bot, "base_url": sandbox.base_url, "pending_updates": sandbox.pending_updates,
                    "calls": len(sandbox.calls)}
        if action not in ACTIONS:
            raise UnknownAction(f"unknown action {action!r}")
        if action == "send_media":
            _decode_content(arguments)
        elif action == "send_album":
            arguments["items"] = [_decode_content(dict(item)) if isinstance(item, dict) else item
                                  for item in arguments.get("items", [])]
        result = getattr(sandbox, action)(**arguments)
        if inspect.isawaitable(result):
            result = await result
        return result

    @staticmethod
    def _answer(status: int, body: dict[str, Any]) -> web.Response:
        return web.Response(status=status, text=json.dumps(body, default=_encode, ensure_ascii=False),
                            content_type="application/json")
