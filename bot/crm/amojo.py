"""amoCRM's Chats API ("amojo"): requests signed with the channel secret, and the hooks it signs.

Every request carries ``Date`` (RFC 2822; amoCRM accepts it for 15 minutes), ``Content-Type:
application/json``, ``Content-MD5`` (lowercase hex MD5 of the exact body bytes, of ``""`` when there is
none) and ``X-Signature``: lowercase hex HMAC-SHA1, keyed with the channel secret, of
``METHOD\\nContent-MD5\\nContent-Type\\nDate\\npath``. A hook amoCRM sends (a manager's reply) carries
``X-Signature``: HMAC-SHA1 of the body with the same secret. The client is :class:`AmoClient`'s
machinery (rate limit, retries, the same errors) with the signature instead of the bearer token.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any

import httpx

from bot.crm.client import AmoClient, AmoError, Params
from bot.crm.config import ClientTuning
from bot.ratelimit import RateLimit

CONTENT_TYPE = "application/json"
DATE_VALID_SECONDS = 15 * 60

# delivery_status values and error codes of the Chats API
DELIVERED, READ, ERROR = 1, 2, -1
ERROR_OTHER = 905  # "other error": the reason goes in ``error``


def encode(body: Any) -> bytes:
    """The exact bytes sent (and hashed): compact JSON, UTF-8; nothing for no body."""
    return b"" if body is None else json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def request_signature(secret: str, method: str, md5: str, content_type: str, date: str, path: str) -> str:
    text = "\n".join((method.upper(), md5, content_type, date, path))
    return hmac.new(secret.encode(), text.encode(), hashlib.sha1).hexdigest()


def signed_headers(secret: str, method: str, path: str, data: bytes, now: datetime) -> dict[str, str]:
    date = format_datetime(now.astimezone(timezone.utc).replace(microsecond=0))  # "Mon, 30 Nov 2026 11:00:00 +0000"
    md5 = hashlib.md5(data).hexdigest()  # noqa: S324 - the API's own choice
    return {"Date": date, "Content-Type": CONTENT_TYPE, "Content-MD5": md5,
            "X-Signature": request_signature(secret, method, md5, CONTENT_TYPE, date, path)}


def hook_signature(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def hook_signed(secret: str, body: bytes, given: str | None) -> bool:
    """The hook's ``X-Signature`` is the body's HMAC (compared in constant time)."""
    return bool(given) and hmac.compare_digest(hook_signature(secret, body).encode(), given.strip().lower().encode(errors="surrogateescape"))  # type: ignore[union-attr]


class ChannelRefused(AmoError):
    """amoCRM refused the channel's signature or scope (401/403): a setting is wrong; work waits, nothing is dropped."""


class AmojoClient(AmoClient):
    """The Chats API of one channel (``channel_id`` and its secret)."""

    def __init__(self, base_url: str, channel_id: str, secret: str, limiter: RateLimit, tuning: ClientTuning, *,
                 http: httpx.AsyncClient | None = None, clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        super().__init__(base_url, _NoToken(), limiter, tuning, http=http)
        self.channel_id = channel_id
        self.secret = secret
        self.clock = clock

    async def delete(self, path: str, body: Any) -> Any:
        return await self.request("DELETE", path, body=body)

    async def _authorised(self, method: str, path: str, params: Params, body: Any) -> Any:
        data = encode(body)
        headers = signed_headers(self.secret, method, path, data, self.clock())
        response = await self._send(method, path, content=data, headers=headers)
        if response.status_code in (401, 403):
            raise ChannelRefused(f"{response.status_code} from the Chats API: {response.text[:200]} "
                                 "(check AMOCRM_CHANNEL_ID / AMOCRM_CHANNEL_SECRET and `optobot amocrm connect-channel`)")
        if response.is_success and not response.content:  # the Chats API answers some calls with an empty 200
            return None
        return self._result(method, response)

    # ------------------------------------------------------------ the calls
    async def connect(self, amojo_account_id: str, title: str) -> dict[str, Any]:
        """Connect the channel to the account; amoCRM answers the ``scope_id`` of the pair."""
        body = {"account_id": amojo_account_id, "title": title, "hook_api_version": "v2"}
        return await self.post(f"/v2/origin/custom/{self.channel_id}/connect", body)

    async def disconnect(self, amojo_account_id: str) -> None:
        await self.delete(f"/v2/origin/custom/{self.channel_id}/disconnect", {"account_id": amojo_account_id})

    async def create_chat(self, scope_id: str, conversation_id: str, user: dict[str, Any]) -> dict[str, Any]:
        """The chat of ``conversation_id`` (created, or the existing one): ``{"id": chat id, "user": {...}}``."""
        return await self.post(f"/v2/origin/custom/{scope_id}/chats", {"conversation_id": conversation_id, "user": user})

    async def send(self, scope_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        """A message into the chat: from the buyer, or (with ``receiver`` and ``silent``) one sent outside amoCRM."""
        return await self.post(f"/v2/origin/custom/{scope_id}", {"event_type": "new_message", "payload": payload})

    async def delivery_status(self, scope_id: str, msgid: str, status: int, *, error_code: int | None = None,
                              error: str | None = None) -> None:
        body: dict[str, Any] = {"msgid": msgid, "delivery_status": status}
        if status == ERROR:
            body |= {"error_code": error_code or ERROR_OTHER, "error": (error or "")[:255]}
        await self.post(f"/v2/origin/custom/{scope_id}/{msgid}/delivery_status", body)


class _NoToken:
    """The Chats API takes no bearer token."""

    async def get(self) -> str:
        return ""

    async def refresh(self, stale: str) -> str:
        return ""
