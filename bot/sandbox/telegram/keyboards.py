"""``reply_markup`` validation and normalisation.

Inline keyboards are checked like Telegram checks them; reply keyboards,
``remove_keyboard`` and ``force_reply`` are accepted and normalised (string
buttons become ``{"text": ...}``).  Only inline keyboards are part of a Bot API
``Message`` on the wire; the others are kept in sandbox state for assertions.
"""

from __future__ import annotations

from typing import Any

from .errors import bad_request
from .formatting import check_link

_INLINE_ACTIONS = (
    "url", "callback_data", "web_app", "login_url", "switch_inline_query",
    "switch_inline_query_current_chat", "switch_inline_query_chosen_chat",
    "copy_text", "callback_game", "pay",
)
MAX_CALLBACK_DATA_BYTES = 64
MAX_INLINE_BUTTONS = 100


def is_inline(markup: dict[str, Any] | None) -> bool:
    """Whether ``markup`` is an InlineKeyboardMarkup (the only kind a Message carries)."""
    return markup is not None and "inline_keyboard" in markup


def validate_reply_markup(markup: Any) -> dict[str, Any]:
    """Validate a decoded ``reply_markup`` and return its normalised form."""
    if not isinstance(markup, dict):
        raise bad_request("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" in markup:
        return {"inline_keyboard": _inline_rows(markup["inline_keyboard"])}
    if "keyboard" in markup:
        return {**markup, "keyboard": _reply_rows(markup["keyboard"])}
    if markup.get("remove_keyboard") is True or markup.get("force_reply") is True:
        return dict(markup)
    raise bad_request("can't parse reply keyboard markup JSON object")


def _rows(rows: Any) -> list[list[Any]]:
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise bad_request("can't parse reply keyboard markup JSON object")
    return rows


def _inline_rows(rows: Any) -> list[list[dict[str, Any]]]:
    rows = _rows(rows)
    if sum(len(row) for row in rows) > MAX_INLINE_BUTTONS:
        raise bad_request("BUTTONS_TOO_MUCH")
    return [[_inline_button(button) for button in row] for row in rows]


def _inline_button(button: Any) -> dict[str, Any]:
    if not isinstance(button, dict) or not isinstance(button.get("text"), str):
        raise bad_request("can't parse inline keyboard button: Field \"text\" must be of type String")
    actions = [key for key in _INLINE_ACTIONS if key in button]
    if not actions:
        raise bad_request("text buttons are unallowed in the inline keyboard")
    if "callback_data" in button:
        data = button["callback_data"]
        if not isinstance(data, str) or not 1 <= len(data.encode("utf-8")) <= MAX_CALLBACK_DATA_BYTES:
            raise bad_request("BUTTON_DATA_INVALID")
    if "url" in button:
        url = button["url"]
        checked, reason = check_link(url) if isinstance(url, str) else (None, "Wrong HTTP URL")
        if checked is None:
            raise bad_request(f"inline keyboard button URL '{url}' is invalid: {reason}")
    return dict(button)


def _reply_rows(rows: Any) -> list[list[dict[str, Any]]]:
    normalised = []
    for row in _rows(rows):
        buttons = []
        for button in row:
            if isinstance(button, str):
                button = {"text": button}
            if not isinstance(button, dict) or not isinstance(button.get("text"), str):
                raise bad_request("can't parse keyboard button: Field \"text\" must be of type String")
            buttons.append(dict(button))
        normalised.append(buttons)
    return normalised


def callback_buttons(markup: dict[str, Any] | None) -> set[str]:
    """All ``callback_data`` values of an inline keyboard."""
    if not is_inline(markup):
        return set()
    return {b["callback_data"] for row in markup["inline_keyboard"] for b in row if "callback_data" in b}
