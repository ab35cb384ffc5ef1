"""PHP-style nested form keys (``a[b][0][c]=v``), as sent by Marquiz and amoCRM webhooks."""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def _listify(node: Any) -> Any:
    if isinstance(node, dict):
        node = {key: _listify(value) for key, value in node.items()}
        if node and all(key.isdigit() for key in node):
            return [node[key] for key in sorted(node, key=int)]
    return node


def parse_nested(pairs: Iterable[tuple[str, str]], *, max_depth: int) -> dict[str, Any]:
    """Turn form pairs into nested dicts; all-numeric keys and ``[]`` become lists.

    Raises ``ValueError`` on a key that mixes a value and a subtree or is nested deeper than ``max_depth``.
    """
    root: dict[str, Any] = {}
    for key, value in pairs:
        match = _KEY.match(key)
        parts = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))] if match else [key]
        if len(parts) > max_depth:
            raise ValueError(f"form key {key[:40]!r}… nested deeper than {max_depth} levels")
        node = root
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            if part == "":
                part = str(sum(1 for k in node if k.isdigit()))
            if last:
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise ValueError(f"form key {key!r} conflicts with a plain value")
                node = child
    return _listify(root)
