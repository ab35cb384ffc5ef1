"""Text every database can store: NUL characters and unpaired surrogates removed.

PostgreSQL refuses NUL in text and JSON values, and an unpaired surrogate (``"\\ud800"`` in JSON)
cannot be encoded as UTF-8 at all: both are dropped wherever outside text enters the service.
"""
from __future__ import annotations

import re
from typing import Any

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class TooDeep(ValueError):
    """Data nested deeper than allowed."""


def clean_text(text: str) -> str:
    """``text`` without NUL characters and unpaired surrogates."""
    return _UNSTORABLE.sub("", text)


def clean_tree(value: Any, max_depth: int, _depth: int = 0) -> Any:
    """JSON-like data with every string (and key) cleaned; raises :class:`TooDeep` past ``max_depth`` levels."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, (dict, list, tuple)):
        if _depth >= max_depth:
            raise TooDeep(f"nested deeper than {max_depth} levels")
        if isinstance(value, dict):
            return {clean_text(str(k)): clean_tree(v, max_depth, _depth + 1) for k, v in value.items()}
        return [clean_tree(item, max_depth, _depth + 1) for item in value]
    return value
