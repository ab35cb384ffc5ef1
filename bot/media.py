"""Telegram files by URL without the bot token: ``GET /media/{token}`` proxies one file (``getFile``) for a while.

Telegram's own file URLs contain the bot token, so they are never handed out. A media token is
``<payload>.<signature>``: the payload (base64url JSON) names the ``file_id``, the file name, its MIME type
and when the link expires; the signature is its HMAC-SHA256 with a key of the service. A forged or
changed token is a 404, an expired one a 410; the file itself is fetched from Telegram when asked for (a 404 when
Telegram no longer has it, a 502 when its file server fails or does not answer: the caller may try again).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import structlog
from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiohttp import ClientError, web

from bot.db.base import utcnow

log = structlog.get_logger(__name__)

MEDIA_PATH = "/media/{token}"
MEDIA_TTL = timedelta(hours=24)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class MediaLinks:
    """Signed, expiring links to Telegram files; ``base()`` is the service's public address."""

    def __init__(self, key: bytes, base: Callable[[], str], *, ttl: timedelta = MEDIA_TTL,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.key = hashlib.sha256(b"optobot:media:" + key).digest()
        self.base = base
        self.ttl = ttl
        self.clock = clock

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self.key, payload.encode(), hashlib.sha256).digest())

    def url(self, file_id: str, *, name: str | None = None, mime: str | None = None) -> str:
        expires = int((self.clock() + self.ttl).timestamp())
        payload = _b64(json.dumps({"f": file_id, "e": expires, "n": name, "m": mime}, separators=(",", ":")).encode())
        return f"{self.base().rstrip('/')}/media/{payload}.{self._sign(payload)}"

    async def profile_photo(self, bot: Bot, user_id: int) -> str | None:
        """A link to the user's current Telegram profile photo (its largest size), or None if they show none."""
        try:
            photos = await bot.get_user_profile_photos(user_id, limit=1)
        except TelegramAPIError as exc:
            log.warning("media.no_profile_photo", user_id=user_id, error=exc.message)
            return None
        if not photos.photos or not photos.photos[0]:
            return None
        return self.url(photos.photos[0][-1].file_id, name="avatar.jpg", mime="image/jpeg")

    def read(self, token: str) -> tuple[dict[str, Any] | None, int]:
        """The token's payload and 200, or None and the status to answer (404 forged, 410 expired)."""
        payload, _, signature = token.partition(".")
        if not hmac.compare_digest(self._sign(payload).encode(), signature.encode()):
            return None, 404
        try:
            value = json.loads(_unb64(payload))
        except (ValueError, binascii.Error):
            return None, 404
        if value.get("e", 0) < self.clock().timestamp():
            return None, 410
        return value, 200

    def handler(self, bot: Bot) -> Callable[[web.Request], Any]:
        async def serve(request: web.Request) -> web.StreamResponse:
            value, status = self.read(request.match_info["token"])
            if value is None:
                reason = "this link has expired" if status == 410 else "no such file"
                return web.json_response({"ok": False, "error": reason}, status=status)
            try:
                file = await bot.get_file(value["f"])
                data = await bot.download_file(file.file_path or "")
            except TelegramAPIError as exc:
                log.warning("media.unavailable", error=exc.message)
                return web.json_response({"ok": False, "error": "the file is no longer available"}, status=404)
            except (ClientError, TimeoutError) as exc:  # Telegram's file server failed: worth another try
                log.warning("media.download_failed", error=str(exc) or type(exc).__name__)
                log.debug("media.download_failed", exc_info=True)
                return web.json_response({"ok": False, "error": "Telegram's file server did not hand the file over; try again"},
                                         status=502)
            headers = {"Cache-Control": "private, max-age=3600"}
            if value.get("n"):
                headers["Content-Disposition"] = f"inline; filename*=UTF-8''{quote(value['n'])}"
            return web.Response(body=data.getvalue() if data else b"", content_type=value.get("m") or "application/octet-stream",
                                headers=headers)

        return serve
