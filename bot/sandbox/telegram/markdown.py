"""MarkdownV2, parsed like tdlib's ``parse_markdown_v2``.

Supported: ``*bold* _italic_ __underline__ ~strike~ ||spoiler|| `code`
```lang pre``` [text](url) ![emoji](tg://emoji?id=N)`` and ``>`` quotes at the
start of a line, with ``\\`` escapes.  Unescaped reserved characters raise
Telegram's "Character '.' is reserved ..." error.  (The project itself uses HTML;
this is here so a stray MarkdownV2 call behaves like Telegram, not silently.)
"""

from __future__ import annotations

from dataclasses import dataclass

from .formatting import Entity, byte_offset, check_link, make_entity, parse_error, sort_entities, utf16_len

_RESERVED = set("_*[]()~`>#+-=|{}.!")
_TDLIB_NAMES = {
    "bold": "Bold", "italic": "Italic", "underline": "Underline", "strikethrough": "Strikethrough",
    "spoiler": "Spoiler", "text_link": "TextUrl", "code": "Code", "pre": "Pre", "custom_emoji": "CustomEmoji",
}
_SPACES = " \t\r\n\v\f"


@dataclass(slots=True)
class _Open:
    kind: str
    offset: int  # UTF-16 offset in the output
    byte: int  # byte offset in the source, for errors
    chunk: int  # index of the first output chunk inside the entity
    language: str = ""


class MarkdownV2Parser:
    """Single-use parser: ``MarkdownV2Parser(source).parse()`` → ``(text, entities)``."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.chunks: list[str] = []
        self.offset = 0
        self.stack: list[_Open] = []
        self.entities: list[Entity] = []
        self.quote_start: int | None = None

    def _emit(self, text: str) -> None:
        self.chunks.append(text)
        self.offset += utf16_len(text)

    def _at(self, index: int) -> str:
        return self.source[index] if index < len(self.source) else ""

    def parse(self) -> tuple[str, list[Entity]]:
        """Parse the whole source or raise a 400 ``can't parse entities`` ApiError."""
        source, i = self.source, 0
        while i < len(source):
            char = source[i]
            if char == "\\" and 0 < ord(self._at(i + 1) or "\0") <= 126:
                self._emit(source[i + 1])
                i += 2
                continue
            in_code = bool(self.stack) and self.stack[-1].kind in ("code", "pre")
            if (in_code and char != "`") or (not in_code and char not in _RESERVED):
                if char == "\n":
                    self._line_break(i)
                self._emit(char)
                i += 1
                continue
            if char == ">" and not self.stack and (i == 0 or source[i - 1] == "\n"):
                if self.quote_start is None:
                    self.quote_start = self.offset
                i += 1
                continue
            if self.stack and self._closes(self.stack[-1].kind, i):
                i = self._close(i)
            else:
                i = self._open(i)
        if self.stack:
            top = self.stack[-1]
            raise parse_error(f"Can't find end of {_TDLIB_NAMES[top.kind]} entity at byte offset {top.byte}")
        self._end_quote()
        return "".join(self.chunks), sort_entities(self.entities)

    def _line_break(self, index: int) -> None:
        """A new line that does not start with ``>`` ends a quote."""
        if self.quote_start is not None and self._at(index + 1) != ">":
            self._end_quote()

    def _end_quote(self) -> None:
        if self.quote_start is not None and self.offset > self.quote_start:
            self.entities.append(make_entity("blockquote", self.quote_start, self.offset - self.quote_start))
        self.quote_start = None

    def _closes(self, kind: str, i: int) -> bool:
        char, following = self.source[i], self._at(i + 1)
        return {
            "bold": char == "*",
            "italic": char == "_" and following != "_",
            "underline": char == "_" and following == "_",
            "strikethrough": char == "~",
            "spoiler": char == "|" and following == "|",
            "code": char == "`",
            "pre": self.source.startswith("```", i),
            "text_link": char == "]",
            "custom_emoji": char == "]",
        }[kind]

    def _reserved(self, i: int) -> Exception:
        return parse_error(f"Character '{self.source[i]}' is reserved and must be escaped with the preceding '\\'")

    def _open(self, i: int) -> int:
        source, char, following = self.source, self.source[i], self._at(i + 1)
        start, language = i, ""
        if char == "_" and following == "_":
            kind, i = "underline", i + 2
        elif char in "_*~[":
            kind, i = {"_": "italic", "*": "bold", "~": "strikethrough", "[": "text_link"}[char], i + 1
        elif char == "|" and following == "|":
            kind, i = "spoiler", i + 2
        elif char == "!" and following == "[":
            kind, i = "custom_emoji", i + 2
        elif source.startswith("```", i):
            kind, i = "pre", i + 3
            end = i
            while end < len(source) and source[end] not in _SPACES and source[end] != "`":
                end += 1
            if end > i and end < len(source) and source[end] != "`":
                language, i = source[i:end], end
            if self._at(i) in ("\n", "\r"):
                i += 2 if self._at(i + 1) in ("\n", "\r") and self._at(i + 1) != self._at(i) else 1
        elif char == "`":
            kind, i = "code", i + 1
        else:
            raise self._reserved(start)
        self.stack.append(_Open(kind, self.offset, byte_offset(source, start), len(self.chunks), language))
        return i

    def _close(self, i: int) -> int:
        top = self.stack.pop()
        argument, skip = top.language, self.offset == top.offset
        if top.kind in ("underline", "spoiler"):
            i += 2
        elif top.kind == "pre":
            i += 3
        elif top.kind in ("text_link", "custom_emoji"):
            url, i = self._link_target(i, top)
            if top.kind == "custom_emoji":
                argument = url.partition("tg://emoji?id=")[2]
                skip = skip or not argument.isdigit()
            else:
                checked, _ = check_link(url)
                skip, argument = skip or checked is None, checked or ""
        else:
            i += 1
        if not skip:
            self.entities.append(make_entity(top.kind, top.offset, self.offset - top.offset, argument))
        return i

    def _link_target(self, i: int, top: _Open) -> tuple[str, int]:
        """Read ``(url)`` after ``]``; without it the link text is the URL."""
        if self._at(i + 1) != "(":
            return "".join(self.chunks[top.chunk :]), i + 1
        i += 2
        url_start, url = i, []
        while i < len(self.source) and self.source[i] != ")":
            if self.source[i] == "\\" and 0 < ord(self._at(i + 1) or "\0") <= 126:
                url.append(self.source[i + 1])
                i += 2
                continue
            url.append(self.source[i])
            i += 1
        if i >= len(self.source):
            raise parse_error(f"Can't find end of a URL at byte offset {byte_offset(self.source, url_start)}")
        return "".join(url), i + 1


def parse_markdown_v2(source: str) -> tuple[str, list[Entity]]:
    """Parse MarkdownV2 into ``(plain_text, entities)``."""
    return MarkdownV2Parser(source).parse()
