"""A sandbox Telegram Bot API server: the project's test double of Telegram.

Speaks the Bot API over real HTTP with Telegram's rules (entity parsing, limits,
errors worded like Telegram's, forum topics, files, flood control, long polling
and webhooks) and offers a control surface to act as users and inspect what the
bot did.  See :class:`TelegramSandbox`.
"""

from .core import CallRecord, ThrottleRecord
from .errors import ApiError, SandboxError
from .html_parser import parse_html
from .markdown import parse_markdown_v2
from .sandbox import TelegramSandbox

__all__ = [
    "ApiError", "CallRecord", "SandboxError", "TelegramSandbox", "ThrottleRecord", "parse_html",
    "parse_markdown_v2",
]
