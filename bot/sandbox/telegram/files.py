"""Files known to the sandbox: uploads, URLs and the file_ids that refer to them."""

from __future__ import annotations

import mimetypes
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

MB = 1024 * 1024
MAX_UPLOAD_SIZE = 50 * MB
MAX_PHOTO_SIZE = 10 * MB
MAX_DOWNLOAD_SIZE = 20 * MB


@dataclass(frozen=True, slots=True)
class FileKind:
    """How Telegram presents one kind of file."""

    id_prefix: str
    folder: str
    mime_type: str | None
    extension: str


KINDS: dict[str, FileKind] = {
    "photo": FileKind("AgACAgIAAxkBAA", "photos", "image/jpeg", "jpg"),
    "document": FileKind("BQACAgIAAxkBAA", "documents", None, "bin"),
    "video": FileKind("BAACAgIAAxkBAA", "videos", "video/mp4", "mp4"),
    "animation": FileKind("CgACAgIAAxkBAA", "animations", "video/mp4", "mp4"),
    "audio": FileKind("CQACAgIAAxkBAA", "music", "audio/mpeg", "mp3"),
    "voice": FileKind("AwACAgIAAxkBAA", "voice", "audio/ogg", "oga"),
    "video_note": FileKind("DQACAgIAAxkBAA", "video_notes", None, "mp4"),
    "sticker": FileKind("CAACAgIAAxkBAA", "stickers", None, "webp"),
}

# Fields a sender may set that end up in the media object, with their defaults.
_ATTRIBUTES: dict[str, dict[str, Any]] = {
    "photo": {"width": 1280, "height": 960},
    "document": {},
    "video": {"width": 1280, "height": 720, "duration": 1},
    "animation": {"width": 480, "height": 270, "duration": 1},
    "audio": {"duration": 1, "performer": None, "title": None},
    "voice": {"duration": 1},
    "video_note": {"length": 240, "duration": 1},
    "sticker": {"type": "regular", "width": 512, "height": 512, "is_animated": False, "is_video": False,
                "emoji": None},
}
_NAMED_KINDS = {"document", "video", "animation", "audio"}
_THUMB_SIDE = 90


@dataclass(slots=True)
class StoredFile:
    """One file_id: its bytes (empty when sent by URL) and the Bot API object built for it."""

    file_id: str
    file_unique_id: str
    kind: str
    data: bytes
    size: int | None
    file_name: str | None
    mime_type: str | None
    url: str | None
    media: Any = None  # dict, or list[PhotoSize] for photos
    file_path: str | None = None


@dataclass
class FileStore(Mapping[str, bytes]):
    """``file_id → bytes`` mapping (the ``sandbox.files`` view) plus the metadata behind it."""

    _by_id: dict[str, StoredFile] = field(default_factory=dict)
    _by_path: dict[str, StoredFile] = field(default_factory=dict)
    _counter: int = 0
    _salt: str = field(default_factory=lambda: secrets.token_urlsafe(6))

    def __getitem__(self, file_id: str) -> bytes:
        return self._by_id[file_id].data

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def record(self, file_id: str) -> StoredFile | None:
        """The stored file behind ``file_id``."""
        return self._by_id.get(file_id)

    def by_path(self, file_path: str) -> StoredFile | None:
        """The file served at ``/file/bot<token>/<file_path>``."""
        return self._by_path.get(file_path)

    def file_path(self, stored: StoredFile) -> str:
        """Assign (once) and return the download path of ``stored``."""
        if stored.file_path is None:
            kind = KINDS[stored.kind]
            extension = kind.extension
            if stored.file_name and "." in stored.file_name:
                extension = stored.file_name.rsplit(".", 1)[1]
            stored.file_path = f"{kind.folder}/file_{len(self._by_path)}.{extension}"
            self._by_path[stored.file_path] = stored
        return stored.file_path

    def add(
        self,
        kind: str,
        data: bytes = b"",
        *,
        file_name: str | None = None,
        mime_type: str | None = None,
        url: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> StoredFile:
        """Store a new file and build its Bot API object (``stored.media``)."""
        if url is not None and file_name is None:
            file_name = url.rsplit("/", 1)[-1].split("?", 1)[0] or None
        if mime_type is None:
            mime_type = KINDS[kind].mime_type or (mimetypes.guess_type(file_name)[0] if file_name else None)
        size = len(data) if url is None else None
        stored = self._new(kind, data, size, file_name, mime_type, url)
        values = {key: default for key, default in _ATTRIBUTES[kind].items()}
        values.update({key: value for key, value in (attributes or {}).items() if key in values and value is not None})
        if kind == "photo":
            stored.media = self._photo_sizes(stored, values["width"], values["height"])
        else:
            stored.media = self._media(stored, kind, values)
        return stored

    def _new(self, kind: str, data: bytes, size: int | None, file_name: str | None, mime_type: str | None,
             url: str | None) -> StoredFile:
        self._counter += 1
        file_id = f"{KINDS[kind].id_prefix}{self._counter:06d}{self._salt}"
        unique_id = f"AgAD{self._counter:06d}{self._salt[:4]}"
        stored = StoredFile(file_id, unique_id, kind, data, size, file_name, mime_type, url)
        self._by_id[file_id] = stored
        return stored

    def _media(self, stored: StoredFile, kind: str, values: dict[str, Any]) -> dict[str, Any]:
        media: dict[str, Any] = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id}
        media.update({key: value for key, value in values.items() if value is not None})
        if kind in _NAMED_KINDS and stored.file_name:
            media["file_name"] = stored.file_name
        if kind != "sticker" and stored.mime_type:
            media["mime_type"] = stored.mime_type
        if stored.size is not None:
            media["file_size"] = stored.size
        return media

    def _photo_sizes(self, stored: StoredFile, width: int, height: int) -> list[dict[str, Any]]:
        """A thumbnail and the full size, like Telegram's PhotoSize list (no real resizing)."""
        thumb = self._new("photo", stored.data, stored.size, stored.file_name, stored.mime_type, stored.url)
        scale = _THUMB_SIDE / max(width, height, 1)
        sizes = []
        for item, w, h in ((thumb, round(width * scale), round(height * scale)), (stored, width, height)):
            size: dict[str, Any] = {"file_id": item.file_id, "file_unique_id": item.file_unique_id,
                                    "width": max(w, 1), "height": max(h, 1)}
            if item.size is not None:
                size["file_size"] = item.size
            sizes.append(size)
        thumb.media = sizes
        return sizes


def media_fields(kind: str, stored: StoredFile) -> dict[str, Any]:
    """Message fields presenting ``stored`` (an animation is also presented as a document)."""
    fields: dict[str, Any] = {kind: stored.media}
    if kind == "animation":
        fields["document"] = {key: value for key, value in stored.media.items()
                              if key in ("file_id", "file_unique_id", "file_name", "mime_type", "file_size")}
    return fields
