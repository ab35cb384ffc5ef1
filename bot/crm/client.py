"""An async amoCRM API v4 client: rate-limited, retrying what is safe to retry, honest about the rest.

* 429 (an HTML page, no Retry-After), 5xx and network errors back off and retry; a POST whose
  outcome is unknown (5xx, read timeout) is *not* repeated: :class:`AmoUnavailable` says
  ``uncertain`` and the caller looks the result up in amoCRM before sending again.
* 401 refreshes the token once; 403 means the account is blocked (:class:`AmoBlocked`).
* 204 is "nothing found" (``None``); 400 carries amoCRM's reason per item (:class:`AmoRejected`).
"""
from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

import httpx
import structlog
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from bot import metrics
from bot.crm.config import ClientTuning
from bot.ratelimit import RateLimit

log = structlog.get_logger(__name__)

Params = dict[str, Any] | list[tuple[str, Any]] | None


class AmoError(Exception):
    """Anything amoCRM (or the way to it) refused."""


class AmoUnavailable(AmoError):
    """A transient failure; ``uncertain`` if the request may have been carried out anyway."""

    def __init__(self, message: str, *, uncertain: bool = False) -> None:
        super().__init__(message)
        self.uncertain = uncertain


class AmoBlocked(AmoError):
    """403 (the account is blocked for exceeding the rate limit, or not paid): stop and keep everything queued."""


class AmoAuthError(AmoError):
    """No valid token: the long-lived token was rejected, or the refresh token is revoked."""


class AmoRejected(AmoError):
    """A 4xx refusal; ``errors`` maps an item's ``request_id`` (or index) to amoCRM's reason."""

    def __init__(self, detail: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or {}

    @classmethod
    def from_response(cls, response: httpx.Response) -> AmoRejected:
        try:
            body = response.json()
        except ValueError:
            return cls(f"{response.status_code} {response.text[:200]}")
        errors: dict[str, str] = {}
        for item in body.get("validation-errors") or []:
            reasons = [f"{e.get('code')} at {e.get('path')}: {e.get('detail')}" for e in item.get("errors") or []]
            errors[str(item.get("request_id"))] = "; ".join(reasons)
        return cls(f"{response.status_code} {body.get('title', '')}: {body.get('detail', '')}".strip(), errors)


class TokenSource(Protocol):
    async def get(self) -> str: ...

    async def refresh(self, stale: str) -> str: ...


def _retryable(method: str):  # type: ignore[no-untyped-def]
    """Retry transient failures; a POST only when it certainly did not reach amoCRM."""
    return lambda exc: isinstance(exc, AmoUnavailable) and (method != "POST" or not exc.uncertain)


class AmoClient:
    def __init__(
        self, base_url: str, tokens: TokenSource, limiter: RateLimit, tuning: ClientTuning, *,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.tokens = tokens
        self.limiter = limiter
        self.tuning = tuning
        self.http = http or httpx.AsyncClient(timeout=tuning.timeout)

    async def close(self) -> None:
        await self.http.aclose()

    async def get(self, path: str, params: Params = None) -> Any:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, body: Any) -> Any:
        return await self.request("POST", path, body=body)

    async def patch(self, path: str, body: Any) -> Any:
        return await self.request("PATCH", path, body=body)

    async def pages(self, path: str, entity: str, params: Params = None, *, max_pages: int = 100) -> AsyncIterator[dict[str, Any]]:
        """Every ``_embedded[entity]`` item of a list, page by page (``limit`` 250) while ``_links.next`` exists."""
        base = list(params.items()) if isinstance(params, dict) else list(params or [])
        for page in range(1, max_pages + 1):
            body = await self.get(path, [*base, ("page", page), ("limit", 250)])
            if not body:
                return
            for item in body.get("_embedded", {}).get(entity, []):
                yield item
            if "next" not in body.get("_links", {}):
                return

    async def request(self, method: str, path: str, *, params: Params = None, body: Any = None) -> Any:
        """One API call with rate limiting and retries; ``None`` for 204 (and 404 on GET)."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.tuning.attempts),
            wait=wait_exponential_jitter(multiplier=self.tuning.wait, max=self.tuning.wait_max, jitter=self.tuning.wait),
            retry=retry_if_exception(_retryable(method)),
            before_sleep=lambda state: log.warning(
                "amocrm.retry", method=method, path=path, attempt=state.attempt_number, error=str(state.outcome.exception()),
            ),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._authorised(method, path, params, body)
        except AmoUnavailable as exc:
            raise AmoUnavailable(str(exc), uncertain=exc.uncertain and method == "POST") from None
        raise AssertionError("unreachable")

    async def _authorised(self, method: str, path: str, params: Params, body: Any) -> Any:
        token = await self.tokens.get()
        response = await self._send(method, path, params=params, json=body, headers={"Authorization": f"Bearer {token}"})
        if response.status_code == 401:
            token = await self.tokens.refresh(token)
            response = await self._send(method, path, params=params, json=body, headers={"Authorization": f"Bearer {token}"})
            if response.status_code == 401:
                raise AmoAuthError(f"401 after a token refresh: {response.text[:200]}")
        return self._result(method, response)

    async def _send(self, method: str, path: str, **request: Any) -> httpx.Response:
        """One HTTP request under the rate limit; network failures become :class:`AmoUnavailable`."""
        started = time.monotonic()
        try:
            async with self.limiter.slot():
                response = await self.http.request(method, self.base_url + path, **request)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise AmoUnavailable(f"cannot connect: {exc!r}") from None
        except httpx.TransportError as exc:
            raise AmoUnavailable(f"no answer: {exc!r}", uncertain=True) from None
        log.debug("amocrm.request", method=method, path=path, status=response.status_code, ms=int((time.monotonic() - started) * 1000))
        return response

    @staticmethod
    def _result(method: str, response: httpx.Response) -> Any:
        status = response.status_code
        if status == 204 or (status == 404 and method == "GET"):
            return None
        if 200 <= status < 300:
            try:
                return response.json()
            except ValueError:
                raise AmoUnavailable(f"{status} with a body that is not JSON", uncertain=True) from None
        if status == 429:
            metrics.AMOCRM_ERRORS.labels("429").inc()
            raise AmoUnavailable("429 Too Many Requests")
        if status in (402, 403):
            raise AmoBlocked(f"{status}: {response.text[:200]}")
        if status >= 500:
            metrics.AMOCRM_ERRORS.labels("5xx").inc()
            raise AmoUnavailable(f"{status} {response.reason_phrase}", uncertain=True)
        raise AmoRejected.from_response(response)
