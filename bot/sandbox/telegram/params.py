"""Reading Bot API parameters the way Telegram accepts them.

Requests arrive as multipart/form-data (aiogram), urlencoded forms, JSON bodies
or query strings.  Form values are strings and complex values are JSON strings;
:class:`Params` coerces them on access so handlers see one typed interface.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.hdrs import CONTENT_TYPE

from .errors import ApiError, bad_request
from .files import MAX_UPLOAD_SIZE

_TRUE = {"true", "1", "yes", "on"}
_ATTACH = "attach://"


@dataclass(frozen=True, slots=True)
class Upload:
    """A file part of a multipart request."""

    field: str
    filename: str
    content_type: str | None
    data: bytes

    def describe(self) -> str:
        """Short form stored in call records instead of the bytes."""
        return f"<file {self.filename!r}, {len(self.data)} bytes>"


class Params:
    """Typed access to one call's parameters."""

    __slots__ = ("values", "uploads")

    def __init__(self, values: dict[str, Any], uploads: dict[str, Upload] | None = None) -> None:
        self.values = values
        self.uploads = uploads or {}

    def has(self, name: str) -> bool:
        """Whether ``name`` was sent (uploads included)."""
        return name in self.values or name in self.uploads

    def raw(self, name: str) -> Any:
        """The value as sent (``None`` if absent)."""
        return self.values.get(name)

    def text(self, name: str, default: str | None = None) -> str | None:
        """A string parameter."""
        value = self.values.get(name)
        if value is None:
            return default
        return value if isinstance(value, str) else str(value)

    def integer(self, name: str, default: int | None = None, *, required: bool = False) -> int | None:
        """An integer parameter; ``required`` raises ``<name> is empty`` when absent."""
        value = self.values.get(name)
        if value is None or value == "":
            if required:
                raise bad_request(f"{name} is empty")
            return default
        if isinstance(value, bool):
            raise bad_request(f"invalid {name} specified")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise bad_request(f"invalid {name} specified") from None

    def number(self, name: str, *, required: bool = False) -> float | None:
        """A float parameter."""
        value = self.values.get(name)
        if value is None or value == "":
            if required:
                raise bad_request(f"{name} is empty")
            return None
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad_request(f"invalid {name} specified") from None

    def flag(self, name: str) -> bool:
        """A boolean parameter (``"true"``/``"false"`` or JSON booleans)."""
        value = self.values.get(name)
        if isinstance(value, str):
            return value.lower() in _TRUE
        return bool(value)

    def json(self, name: str) -> Any:
        """A JSON-serialised parameter (already decoded when the body was JSON)."""
        value = self.values.get(name)
        if not isinstance(value, str):
            return value
        if not value:
            return None
        try:
            return json.loads(value)
        except ValueError:
            raise bad_request(f"can't parse {name} JSON object") from None

    def chat_id(self, name: str = "chat_id") -> int | str:
        """A chat identifier: an integer or ``@username``."""
        value = self.values.get(name)
        if value is None or value == "":
            raise bad_request(f"{name} is empty")
        if isinstance(value, str) and value.startswith("@"):
            return value
        try:
            return int(value)
        except (TypeError, ValueError):
            raise bad_request("chat not found") from None

    def file(self, field: str) -> Upload | str | None:
        """The InputFile sent as ``field``: an upload, or a file_id / URL string."""
        value = self.values.get(field)
        if value is None or value == "":
            return self.uploads.get(field)
        return self.attachment(value)

    def attachment(self, value: Any) -> Upload | str:
        """Resolve ``attach://<name>`` to its upload; any other string is a file_id or URL."""
        if not isinstance(value, str):
            raise bad_request("wrong file identifier/HTTP URL specified")
        if value.startswith(_ATTACH):
            upload = self.uploads.get(value[len(_ATTACH):])
            if upload is None:
                raise bad_request("wrong file identifier/HTTP URL specified")
            return upload
        return value

    def for_record(self) -> dict[str, Any]:
        """Parameters for a call record: values plus upload descriptions (no bytes)."""
        if not self.uploads:
            return dict(self.values)
        return {**self.values, **{name: upload.describe() for name, upload in self.uploads.items()}}


async def _read_part(part: BodyPartReader) -> bytes:
    chunks, size = [], 0
    while chunk := await part.read_chunk(1 << 16):
        size += len(chunk)
        if size > MAX_UPLOAD_SIZE:
            raise ApiError(413, "Request Entity Too Large")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_multipart(reader: MultipartReader) -> Params:
    """Read every part of a multipart body into :class:`Params`."""
    values: dict[str, Any] = {}
    uploads: dict[str, Upload] = {}
    async for part in reader:
        if not isinstance(part, BodyPartReader) or part.name is None:
            continue
        if part.filename is not None:
            uploads[part.name] = Upload(part.name, part.filename, part.headers.get(CONTENT_TYPE), await _read_part(part))
        else:
            values[part.name] = (await _read_part(part)).decode(part.get_charset("utf-8"))
    return Params(values, uploads)


async def read_request(request: web.Request) -> Params:
    """Collect the parameters of a Bot API request from its query string and body."""
    query = dict(request.query)
    content_type = request.content_type
    if content_type.startswith("multipart/"):
        params = await read_multipart(await request.multipart())
        params.values = {**query, **params.values}
        return params
    if content_type == "application/json":
        body = await request.read()
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            raise bad_request("can't parse JSON object") from None
        if not isinstance(data, dict):
            raise bad_request("can't parse JSON object")
        return Params({**query, **data})
    if request.can_read_body:
        form = await request.post()
        return Params({**query, **{key: value for key, value in form.items() if isinstance(value, str)}})
    return Params(query)
