"""Errors raised inside the sandbox.

:class:`ApiError` is what a Bot API method answers with (it becomes the
``{"ok": false, ...}`` body); :class:`SandboxError` is raised to a *test* that
misuses the control surface (clicking a button that does not exist, a user
writing to a chat they are not in, ...).
"""

from __future__ import annotations

from typing import Any


class SandboxError(Exception):
    """A control-surface call that the sandbox cannot honour."""


class ApiError(Exception):
    """A Bot API error response, exactly as Telegram words it."""

    def __init__(self, error_code: int, description: str, *, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.error_code = error_code
        self.description = description
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        """The JSON body Telegram sends for this error."""
        body: dict[str, Any] = {"ok": False, "error_code": self.error_code, "description": self.description}
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


def bad_request(reason: str) -> ApiError:
    """400 ``Bad Request: <reason>``."""
    return ApiError(400, f"Bad Request: {reason}")


def forbidden(reason: str) -> ApiError:
    """403 ``Forbidden: <reason>``."""
    return ApiError(403, f"Forbidden: {reason}")


class RateLimited(ApiError):
    """429 issued by the sandbox's flood control; ``scope`` names the limit hit."""

    def __init__(self, retry_after: int, scope: str) -> None:
        super().__init__(429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after)
        self.scope = scope


def default_description(error_code: int, retry_after: int | None = None) -> str:
    """Telegram's generic wording for an error code (used by fault injection)."""
    if error_code == 429:
        return f"Too Many Requests: retry after {retry_after or 1}"
    return {
        400: "Bad Request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not Found",
        409: "Conflict",
        413: "Request Entity Too Large",
        500: "Internal Server Error",
        502: "Bad Gateway",
    }.get(error_code, "Error")


def unauthorized() -> ApiError:
    """401 for a token that is not the sandbox bot's."""
    return ApiError(401, "Unauthorized")


def not_found() -> ApiError:
    """404 for an unknown method or file."""
    return ApiError(404, "Not Found")
