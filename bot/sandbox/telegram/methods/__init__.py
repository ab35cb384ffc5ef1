"""Bot API method handlers, grouped by area."""

from __future__ import annotations

from ..core import Core
from .base import Method, RawJson
from .chats import ChatMethods
from .delivery import DeliveryMethods
from .editing import EditingMethods
from .messages import MessageMethods, new_media_group_id

__all__ = ["Method", "RawJson", "method_table", "new_media_group_id"]


def method_table(core: Core) -> dict[str, Method]:
    """All supported methods, keyed by lower-case name (Telegram matches names case-insensitively)."""
    table: dict[str, Method] = {}
    for group in (MessageMethods(core), EditingMethods(core), ChatMethods(core), DeliveryMethods(core)):
        for method in group.methods():
            table[method.name.lower()] = method
    return table
