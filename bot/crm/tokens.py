"""amoCRM credentials: a long-lived token, or an OAuth pair kept in the database.

Refresh tokens are single-use across every process, so a refresh runs under the pair's row
lock (and an in-process lock), re-reads the pair first (someone may have refreshed already),
and commits the new pair before anything uses it.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.crm import store
from bot.crm.client import AmoAuthError, AmoUnavailable
from bot.db.base import utcnow
from bot.ratelimit import RateLimit

log = structlog.get_logger(__name__)

EARLY = timedelta(minutes=5)  # refresh this long before the access token expires


class StaticToken:
    """A long-lived token: nothing to refresh."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def get(self) -> str:
        return self._token

    async def refresh(self, stale: str) -> str:
        raise AmoAuthError("amoCRM rejected AMOCRM_ACCESS_TOKEN (expired or revoked): generate a new long-lived token")


class OAuthTokens:
    """The OAuth 2.0 pair in ``kv`` (``crm.tokens``), refreshed once per expiry however many callers ask."""

    def __init__(
        self, db: async_sessionmaker[AsyncSession], base_url: str, client_id: str, client_secret: str, redirect_uri: str,
        *, http: httpx.AsyncClient, limiter: RateLimit, clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.url = base_url.rstrip("/") + "/oauth2/access_token"
        self._client = {"client_id": client_id, "client_secret": client_secret, "redirect_uri": redirect_uri}
        self.http = http
        self.limiter = limiter
        self.clock = clock
        self._pair: dict[str, Any] | None = None
        self._lock = asyncio.Lock()

    def _fresh(self, pair: dict[str, Any] | None) -> bool:
        return bool(pair) and datetime.fromisoformat(pair["expires_at"]) - EARLY > self.clock()

    async def get(self) -> str:
        if self._pair is None:
            async with self.db() as session:
                self._pair = await store.read(session, store.TOKENS)
            if not self._pair:
                raise AmoAuthError("no amoCRM token: run `optobot amocrm login <code>` or set AMOCRM_ACCESS_TOKEN")
        if not self._fresh(self._pair):
            return await self.refresh(self._pair["access_token"])
        return self._pair["access_token"]

    async def refresh(self, stale: str) -> str:
        """A valid access token other than ``stale``: someone else's fresh one, or a new one."""
        async with self._lock:
            if self._pair and self._pair["access_token"] != stale and self._fresh(self._pair):
                return self._pair["access_token"]
            async with self.db.begin() as session:
                await store.lock(session, store.TOKENS)
                pair = await store.read(session, store.TOKENS)
                if not pair or not pair.get("refresh_token"):
                    raise AmoAuthError("no amoCRM refresh token: run `optobot amocrm login <code>`")
                if pair["access_token"] == stale or not self._fresh(pair):
                    pair = await self._grant(grant_type="refresh_token", refresh_token=pair["refresh_token"])
                    await store.write(session, store.TOKENS, pair)
                    log.info("amocrm.token_refreshed", expires_at=pair["expires_at"])
            self._pair = pair
            return pair["access_token"]

    async def login(self, code: str) -> datetime:
        """Exchange an authorization code for the first pair and store it; returns its expiry."""
        pair = await self._grant(grant_type="authorization_code", code=code)
        async with self.db.begin() as session:
            await store.lock(session, store.TOKENS)
            await store.write(session, store.TOKENS, pair)
        self._pair = pair
        return datetime.fromisoformat(pair["expires_at"])

    async def _grant(self, **grant: str) -> dict[str, Any]:
        try:
            async with self.limiter.slot():
                response = await self.http.post(self.url, json={**self._client, **grant})
        except httpx.TransportError as exc:
            raise AmoUnavailable(f"token endpoint: {exc!r}") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise AmoUnavailable(f"token endpoint: {response.status_code}")
        if response.status_code != 200:
            try:
                hint = response.json().get("hint") or response.json().get("detail")
            except ValueError:
                hint = response.text[:200]
            raise AmoAuthError(f"amoCRM refused the {grant['grant_type']} grant ({response.status_code}: {hint}); run `optobot amocrm login <code>`")
        body = response.json()
        expires_at = self.clock() + timedelta(seconds=int(body.get("expires_in", 86400)))
        return {"access_token": body["access_token"], "refresh_token": body["refresh_token"], "expires_at": expires_at.isoformat()}
