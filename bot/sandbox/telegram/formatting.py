"""Message text as Telegram stores it: plain text plus ``MessageEntity`` dicts.

Offsets and lengths are in UTF-16 code units, as in the Bot API.  This module
holds the pieces shared by the HTML and MarkdownV2 parsers (entity building,
ordering, whitespace trimming, link checking) and the auto-detection of
``bot_command`` / ``url`` / ``mention`` / ``hashtag`` / ``email`` entities that
Telegram adds to every message.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from .errors import ApiError, bad_request

Entity = dict[str, Any]

# tdlib's ordering of entities that start at the same offset and have the same
# length (lower first); see MessageEntity::get_type_priority.
_PRIORITY = {
    "blockquote": 0,
    "expandable_blockquote": 0,
    "pre": 11,
    "code": 20,
    "text_link": 49,
    "text_mention": 49,
    "bold": 90,
    "italic": 91,
    "underline": 92,
    "strikethrough": 93,
    "spoiler": 94,
    "custom_emoji": 99,
}
_WHITESPACE = " \t\r\n\v\f"
_LINK_SCHEMES = {"http", "https", "tg", "ton", "ftp"}
_HOST = re.compile(r"^(?:[\w-]+\.)+[\w-]{2,}$|^localhost$|^\d{1,3}(?:\.\d{1,3}){3}$", re.UNICODE)

# Auto-detected entities (a pragmatic subset of tdlib's detectors).
_DETECTORS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("url", re.compile(r"\bhttps?://[^\s<>\"']+[^\s<>\"'.,;:!?)\]]", re.IGNORECASE)),
    ("email", re.compile(r"(?<![\w.@])[\w.+-]+@(?:[\w-]+\.)+[A-Za-z]{2,}\b")),
    ("bot_command", re.compile(r"(?<![\w/@])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?![\w/])")),
    ("mention", re.compile(r"(?<![\w@/.])@[A-Za-z0-9_]{4,32}(?![\w@])")),
    ("hashtag", re.compile(r"(?<![\w#])#\w*[^\W\d]\w*")),
)
_OPAQUE = {"code", "pre", "text_link", "url", "email", "text_mention"}


def utf16_len(text: str) -> int:
    """Length of ``text`` in UTF-16 code units."""
    return len(text) if text.isascii() else len(text.encode("utf-16-le")) // 2


def byte_offset(text: str, index: int) -> int:
    """UTF-8 byte offset of character ``index`` (Telegram reports parse errors in bytes)."""
    return len(text[:index].encode("utf-8"))


def parse_error(reason: str) -> ApiError:
    """400 ``can't parse entities: <reason>``."""
    return bad_request(f"can't parse entities: {reason}")


def check_link(url: str) -> tuple[str | None, str]:
    """Validate a link like tdlib's ``LinkManager::check_link``.

    Returns ``(normalised_url, "")`` or ``(None, reason)``.
    """
    url = url.strip()
    if not url:
        return None, "Empty URL"
    if "://" not in url and not url.lower().startswith("tg:"):
        url = "http://" + url
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _LINK_SCHEMES:
        return None, "Unsupported link scheme"
    if scheme in ("http", "https", "ftp") and not _HOST.match(parts.hostname or ""):
        return None, "Wrong HTTP URL"
    return url, ""


def make_entity(kind: str, offset: int, length: int, argument: str = "") -> Entity:
    """Build a Bot API MessageEntity dict, attaching the argument to the right key."""
    entity: Entity = {"type": kind, "offset": offset, "length": length}
    if kind == "text_link":
        entity["url"] = argument
    elif kind == "pre" and argument:
        entity["language"] = argument
    elif kind == "custom_emoji":
        entity["custom_emoji_id"] = argument
    return entity


def sort_entities(entities: list[Entity]) -> list[Entity]:
    """Order entities as Telegram returns them: by offset, longer first, then type priority."""
    return sorted(entities, key=lambda e: (e["offset"], -e["length"], _PRIORITY.get(e["type"], 50)))


def trim(text: str, entities: list[Entity]) -> tuple[str, list[Entity]]:
    """Strip leading/trailing whitespace like Telegram, shifting and clipping entities."""
    stripped = text.strip(_WHITESPACE)
    if stripped == text:
        return text, entities
    lead = utf16_len(text[: len(text) - len(text.lstrip(_WHITESPACE))])
    total = utf16_len(stripped)
    result = []
    for entity in entities:
        start = max(entity["offset"] - lead, 0)
        end = min(entity["offset"] + entity["length"] - lead, total)
        if end > start:
            result.append({**entity, "offset": start, "length": end - start})
    return stripped, result


def _utf16_offsets(text: str) -> list[int] | None:
    """Map each character index to its UTF-16 offset, or ``None`` when they coincide."""
    if text.isascii() or utf16_len(text) == len(text):
        return None
    offsets, position = [], 0
    for char in text:
        offsets.append(position)
        position += 2 if ord(char) > 0xFFFF else 1
    offsets.append(position)
    return offsets


def detect_entities(text: str, entities: list[Entity]) -> list[Entity]:
    """Add the entities Telegram detects by itself (commands, links, mentions, ...).

    Detected entities never overlap code, pre, links or each other.
    """
    if not any(marker in text for marker in "/@#:"):
        return entities
    offsets = _utf16_offsets(text)
    taken = [(e["offset"], e["offset"] + e["length"]) for e in entities if e["type"] in _OPAQUE]
    found = []
    for kind, pattern in _DETECTORS:
        for match in pattern.finditer(text):
            start, end = match.span()
            if offsets is not None:
                start, end = offsets[start], offsets[end]
            if any(start < busy_end and busy_start < end for busy_start, busy_end in taken):
                continue
            taken.append((start, end))
            found.append(make_entity(kind, start, end - start))
    return sort_entities(entities + found) if found else entities


def validate_entities(raw: Any, text: str) -> list[Entity]:
    """Check explicitly passed ``entities`` / ``caption_entities``."""
    if not isinstance(raw, list):
        raise bad_request("can't parse entities JSON object")
    total = utf16_len(text)
    result = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise bad_request("can't parse entities JSON object")
        offset, length = item.get("offset"), item.get("length")
        if not isinstance(offset, int) or not isinstance(length, int) or offset < 0 or length <= 0:
            raise bad_request("can't parse entities JSON object")
        if offset + length > total:
            continue
        result.append(dict(item))
    return sort_entities(result)
