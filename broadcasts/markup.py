"""Checks a rendered message against Telegram's HTML subset and length limits before any send."""
from __future__ import annotations

import html
import re

TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024

_TOKEN = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[^<>]*)?)\s*>|<|&(#\d+|#x[0-9a-fA-F]+|lt|gt|amp|quot);?|&")
_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "tg-spoiler", "span", "a", "tg-emoji", "code", "pre", "blockquote"}


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def visible_length(text: str) -> int:
    """The length Telegram counts (UTF-16 code units of the text without tags)."""
    return _utf16_len(plain(text))


def plain(text: str) -> str:
    """Telegram HTML as plain text (the terminal, a campaign's name)."""
    return html.unescape(re.sub(r"<[^<>]*>", "", text))


def problem(text: str, limit: int) -> str | None:
    """Why Telegram would refuse ``text`` as HTML within ``limit`` characters, or None."""
    stack: list[str] = []
    for match in _TOKEN.finditer(text):
        closing, name, attributes = match.group(1), (match.group(2) or "").lower(), match.group(3) or ""
        token = match.group(0)
        if token == "<":
            return f'unescaped "<" at {match.start()} (write &lt;)'
        if token == "&":
            return f'unescaped "&" at {match.start()} (write &amp;)'
        if not name:
            continue  # a character reference
        if name not in _TAGS:
            return f"unsupported tag <{name}>"
        if closing:
            if not stack or stack[-1] != name:
                return f"unexpected </{name}>"
            stack.pop()
        else:
            if name == "a" and "href" not in attributes.lower():
                return "<a> without href"
            stack.append(name)
    if stack:
        return f"unclosed <{stack[-1]}>"
    length = visible_length(text)
    if not text.strip() or length == 0:
        return "empty message"
    if length > limit:
        return f"too long: {length} characters after rendering (limit {limit})"
    return None
