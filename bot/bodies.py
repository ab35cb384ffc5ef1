"""Every inbound webhook body, bounded in one place: size, nesting depth, field count and text.

:func:`read` turns a request into a :class:`Body` — the bytes as they arrived and the data
decoded from JSON, a form or ``multipart/form-data`` — or raises :class:`BadBody` naming why
(the status to answer with: 400, 413, or 415 for a content type no webhook sends). Decoded text
is cleaned (:mod:`bot.clean`), so nothing downstream meets a NUL, an unpaired surrogate or a
structure deeper than :data:`MAX_DEPTH`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from python_multipart import FormParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

from bot.clean import TooDeep, clean_text, clean_tree
from bot.formdata import parse_nested

MAX_BODY = 256 * 1024  # bytes
MAX_DEPTH = 32  # nested objects/lists (Marquiz, amoCRM and Telegram payloads use fewer than 12)
MAX_FIELDS = 1000  # fields of a form

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"


class BadBody(ValueError):
    """A body no webhook would send; ``status`` is the HTTP answer, the message says why."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Body:
    raw: bytes
    content_type: str
    data: dict[str, Any]

    @property
    def text(self) -> str:
        """The body as it arrived, as text (invalid UTF-8 replaced), to keep with what was made of it."""
        return self.raw.decode("utf-8", errors="replace")


def parse_json(raw: bytes) -> Any:
    """A JSON document, bounded in depth, its strings cleaned."""
    try:
        data = json.loads(raw, parse_constant=_not_a_number, parse_float=_finite)
    except RecursionError:
        raise BadBody(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # also UnicodeDecodeError
        raise BadBody(f"malformed JSON: {exc}") from None
    return _bounded(data)


def _not_a_number(constant: str) -> float:
    raise ValueError(f"{constant} is not a JSON number")  # Python's json takes NaN and Infinity; JSON and PostgreSQL don't


def _finite(text: str) -> float:
    if not math.isfinite(value := float(text)):
        raise ValueError(f"number {text[:20]} out of range")
    return value


def parse_form(raw: bytes) -> dict[str, Any]:
    """An ``application/x-www-form-urlencoded`` body with PHP-style nested keys (``a[b][0]=v``)."""
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except UnicodeDecodeError as exc:
        raise BadBody(f"malformed form body: {exc}") from None
    except ValueError:
        raise BadBody(f"more than {MAX_FIELDS} form fields") from None
    return _nested(pairs)


def parse_multipart(raw: bytes, content_type: str) -> dict[str, Any]:
    """A ``multipart/form-data`` body of plain fields (a file is refused), keys as in :func:`parse_form`."""
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadBody("multipart body without a boundary")
    pairs: list[tuple[str, str]] = []
    files: list[str] = []

    def field(item: Any) -> None:
        pairs.append((item.field_name.decode("utf-8", "replace"), (item.value or b"").decode("utf-8", "replace")))

    parser = FormParser(kind.decode(), field, lambda item: files.append(item.field_name.decode("utf-8", "replace")), boundary=boundary)
    try:
        parser.write(raw)
        parser.finalize()
    except FormParserError as exc:
        raise BadBody(f"malformed multipart body: {exc}") from None
    if files:
        raise BadBody(f"file uploads are not accepted (field {files[0]!r})")
    if len(pairs) > MAX_FIELDS:
        raise BadBody(f"more than {MAX_FIELDS} form fields")
    return _nested(pairs)


def _nested(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    try:
        return _bounded(parse_nested(pairs, max_depth=MAX_DEPTH))
    except ValueError as exc:
        raise BadBody(f"malformed form body: {exc}") from None


def _bounded(data: Any) -> Any:
    try:
        return clean_tree(data, MAX_DEPTH)
    except TooDeep as exc:
        raise BadBody(f"body {exc}") from None


async def read_raw(request: web.Request) -> bytes:
    """The body's bytes, at most :data:`MAX_BODY` (else :class:`BadBody` with 413)."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BadBody(f"body larger than {MAX_BODY // 1024} KB", 413) from None


async def read(request: web.Request, accept: tuple[str, ...] = (JSON, FORM, MULTIPART)) -> Body:
    """Read and decode a webhook body of one of the ``accept``-ed content types (JSON when none is given)."""
    content_type = request.content_type if request.headers.get("Content-Type") else JSON
    if content_type not in accept:
        raise BadBody(f"unsupported content type {clean_text(content_type)!r}; send {' or '.join(accept)}", 415)
    raw = await read_raw(request)
    if content_type == FORM:
        data = parse_form(raw)
    elif content_type == MULTIPART:
        data = parse_multipart(raw, request.headers["Content-Type"])
    else:
        data = parse_json(raw)
    if not isinstance(data, dict):
        raise BadBody(f"expected a JSON object, got {type(data).__name__}")
    return Body(raw, content_type, data)
