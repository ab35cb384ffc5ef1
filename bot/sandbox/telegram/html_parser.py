"""Telegram's HTML subset, parsed the way tdlib (``parse_html``) does.

Supported: ``b strong i em u ins s strike del tg-spoiler span.tg-spoiler a[href]
code[class=language-x] pre blockquote[expandable] tg-emoji[emoji-id]`` and the
``&lt; &gt; &amp; &quot;`` / numeric character references.  Errors carry
Telegram's wording and UTF-8 byte offsets.

One deliberate difference: in *strict* mode (the sandbox default) a bare ``&``
that does not start a character reference is rejected, although Telegram shows
it literally — the Bot API docs require it to be escaped and templates that
forget it usually also forget ``<``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .formatting import Entity, byte_offset, check_link, make_entity, parse_error, sort_entities, utf16_len

_SPECIAL = re.compile(r"[<&]")
_SPACES = " \t\r\n\v\f"
_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_SUPPORTED = {
    "a", "b", "strong", "i", "em", "s", "strike", "del", "u", "ins",
    "tg-spoiler", "tg-emoji", "span", "pre", "code", "blockquote",
}
_SIMPLE = {
    "b": "bold", "strong": "bold",
    "i": "italic", "em": "italic",
    "u": "underline", "ins": "underline",
    "s": "strikethrough", "strike": "strikethrough", "del": "strikethrough",
    "tg-spoiler": "spoiler", "span": "spoiler",
}


@dataclass(slots=True)
class _OpenTag:
    name: str
    argument: str
    offset: int  # UTF-16 offset in the output
    chunk: int  # index of the first output chunk inside the tag


class HtmlParser:
    """Single-use parser: ``HtmlParser(source).parse()`` → ``(text, entities)``."""

    def __init__(self, source: str, *, strict: bool = True) -> None:
        self.source = source
        self.strict = strict
        self.pos = 0
        self.chunks: list[str] = []
        self.offset = 0
        self.stack: list[_OpenTag] = []
        self.entities: list[Entity] = []

    def parse(self) -> tuple[str, list[Entity]]:
        """Parse the whole source or raise a 400 ``can't parse entities`` ApiError."""
        source = self.source
        while self.pos < len(source):
            match = _SPECIAL.search(source, self.pos)
            if match is None:
                self._emit(source[self.pos :])
                break
            if match.start() > self.pos:
                self._emit(source[self.pos : match.start()])
            self.pos = match.start()
            if source[self.pos] == "&":
                self._entity_reference()
            elif self.pos + 1 < len(source) and source[self.pos + 1] == "/":
                self._end_tag()
            else:
                self._start_tag()
        if self.stack:
            raise parse_error(f'Can\'t find end tag corresponding to start tag "{self.stack[-1].name}"')
        for entity in self.entities:
            if entity["type"] == "code":
                entity.pop("language", None)
        return "".join(self.chunks), sort_entities(self.entities)

    # -- helpers -----------------------------------------------------------------

    def _emit(self, text: str) -> None:
        self.chunks.append(text)
        self.offset += utf16_len(text)

    def _char(self, index: int) -> str:
        return self.source[index] if index < len(self.source) else ""

    def _error(self, reason: str, index: int) -> Exception:
        return parse_error(f"{reason} at byte offset {byte_offset(self.source, index)}")

    def _decode_reference(self, index: int) -> tuple[str | None, int]:
        """Decode ``&...`` at ``index``; returns ``(char or None, end index)``."""
        source, end = self.source, index + 1
        if self._char(end) == "#":
            end += 1
            base = 10
            if self._char(end) in ("x", "X"):
                base, end = 16, end + 1
            digits_start = end
            digits = "0123456789abcdefABCDEF" if base == 16 else "0123456789"
            while end < len(source) and source[end] in digits:
                end += 1
            if end == digits_start:
                return None, index
            code = int(source[digits_start:end], base)
            if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                return None, index
            char = chr(code)
        else:
            while end < len(source) and source[end].isascii() and source[end].isalpha():
                end += 1
            char = _NAMED.get(source[index + 1 : end])
            if char is None:
                return None, index
        if self._char(end) == ";":
            end += 1
        return char, end

    def _entity_reference(self) -> None:
        char, end = self._decode_reference(self.pos)
        if char is None:
            if self.strict:
                raise self._error('Unescaped "&"; use "&amp;"', self.pos)
            char, end = "&", self.pos + 1
        self._emit(char)
        self.pos = end

    def _skip_spaces(self) -> None:
        while self.pos < len(self.source) and self.source[self.pos] in _SPACES:
            self.pos += 1

    def _read_until(self, stops: str) -> str:
        start = self.pos
        while self.pos < len(self.source) and self.source[self.pos] not in stops:
            self.pos += 1
        return self.source[start : self.pos]

    # -- tags --------------------------------------------------------------------

    def _start_tag(self) -> None:
        begin = self.pos
        self.pos += 1
        name = self._read_until(_SPACES + ">").lower()
        if self.pos >= len(self.source):
            raise self._error("Unclosed start tag", begin)
        if name not in _SUPPORTED:
            raise self._error(f'Unsupported start tag "{name}"', begin)
        argument = self._attributes(name, begin)
        self.pos += 1  # '>'
        if name == "span" and argument != "spoiler":
            raise self._error('Tag "span" must have class "tg-spoiler"', begin)
        if name == "tg-emoji" and not argument.isdigit():
            raise self._error('Tag "tg-emoji" must have attribute "emoji-id"', begin)
        self.stack.append(_OpenTag(name, argument, self.offset, len(self.chunks)))

    def _attributes(self, tag: str, begin: int) -> str:
        """Read attributes up to ``>``; return the one argument the tag cares about."""
        argument = ""
        while True:
            self._skip_spaces()
            if self.pos >= len(self.source):
                raise self._error("Unclosed start tag", begin)
            if self.source[self.pos] == ">":
                return argument
            attribute = self._read_until(_SPACES + "=>").lower()
            if not attribute:
                raise self._error(f'Empty attribute name in the tag "{tag}"', begin)
            self._skip_spaces()
            if self._char(self.pos) != "=":
                if tag == "blockquote" and attribute == "expandable":
                    argument = "expandable"
                    continue
                raise self._error(f'Expected equal sign in declaration of an attribute of the tag "{tag}"', begin)
            self.pos += 1
            self._skip_spaces()
            value = self._attribute_value(begin)
            if tag == "a" and attribute == "href":
                argument = value
            elif tag == "code" and attribute == "class" and value.startswith("language-"):
                argument = value[len("language-") :]
            elif tag == "span" and attribute == "class" and value.startswith("tg-"):
                argument = value[len("tg-") :]
            elif tag == "tg-emoji" and attribute == "emoji-id":
                argument = value
            elif tag == "blockquote" and attribute == "expandable":
                argument = "expandable"

    def _attribute_value(self, begin: int) -> str:
        quote = self._char(self.pos)
        if not quote:
            raise self._error("Unclosed start tag", begin)
        if quote not in "'\"":
            token_start = self.pos
            while self.pos < len(self.source) and (self.source[self.pos].isalnum() or self.source[self.pos] in ".-"):
                self.pos += 1
            if self._char(self.pos) not in tuple(_SPACES + ">"):
                raise self._error("Unexpected end of name token", token_start)
            return self.source[token_start : self.pos].lower()
        self.pos += 1
        value: list[str] = []
        while self.pos < len(self.source) and self.source[self.pos] != quote:
            if self.source[self.pos] == "&":
                char, end = self._decode_reference(self.pos)
                if char is not None:
                    value.append(char)
                    self.pos = end
                    continue
            value.append(self.source[self.pos])
            self.pos += 1
        if self.pos >= len(self.source):
            raise self._error("Unclosed start tag", begin)
        self.pos += 1
        return "".join(value)

    def _end_tag(self) -> None:
        begin = self.pos
        if not self.stack:
            raise self._error("Unexpected end tag", begin)
        self.pos += 2
        name = self._read_until(_SPACES + ">").lower()
        self._skip_spaces()
        if self._char(self.pos) != ">":
            raise self._error("Unclosed end tag", begin)
        self.pos += 1
        tag = self.stack.pop()
        if name and name != tag.name:
            raise parse_error(f"Unmatched end tag at byte offset {byte_offset(self.source, begin)}, "
                              f'expected "</{tag.name}>", found "</{name}>"')
        if self.offset > tag.offset:
            self._close(tag)

    def _close(self, tag: _OpenTag) -> None:
        offset, length = tag.offset, self.offset - tag.offset
        last = self.entities[-1] if self.entities else None
        same_span = last is not None and last["offset"] == offset and last["length"] == length
        if tag.name in _SIMPLE:
            self.entities.append(make_entity(_SIMPLE[tag.name], offset, length))
        elif tag.name == "a":
            url, _ = check_link(tag.argument or "".join(self.chunks[tag.chunk :]))
            if url is not None:
                self.entities.append(make_entity("text_link", offset, length, url))
        elif tag.name == "code":
            if same_span and last["type"] == "pre" and tag.argument:
                last["language"] = tag.argument
            else:
                entity = make_entity("code", offset, length)
                if tag.argument:  # kept until the end of parsing: an enclosing <pre> may claim it
                    entity["language"] = tag.argument
                self.entities.append(entity)
        elif tag.name == "pre":
            if same_span and last["type"] == "code" and last.get("language"):
                last["type"] = "pre"
            else:
                self.entities.append(make_entity("pre", offset, length))
        elif tag.name == "blockquote":
            kind = "expandable_blockquote" if tag.argument else "blockquote"
            self.entities.append(make_entity(kind, offset, length))
        elif tag.name == "tg-emoji":
            self.entities.append(make_entity("custom_emoji", offset, length, tag.argument))


def parse_html(source: str, *, strict: bool = True) -> tuple[str, list[Entity]]:
    """Parse Telegram HTML into ``(plain_text, entities)``."""
    return HtmlParser(source, strict=strict).parse()
