"""A sandbox Telegram Bot API server: the project's test double of Telegram.

Speaks the Bot API over real HTTP with Telegram's rules (entity parsing, limits,
errors worded like Telegram's, forum topics, files, flood control, long polling
and webhooks) and offers a control surface to act as users and inspect what the
bot did::

    sandbox = TelegramSandbox(token="123456:TEST")
    base_url = await sandbox.start()
    bot = Bot(sandbox.token, session=AiohttpSession(api=TelegramAPIServer.from_base(base_url)))
    sandbox.add_user(1001, "Анна")
    sandbox.send_text(1001, "/start")
    [reply] = await sandbox.wait_for_messages(1001, 1)

Package layout: :mod:`.sandbox` (the facade), :mod:`.state` (users, chats,
messages), :mod:`.methods` (Bot API handlers), :mod:`.html_parser` /
:mod:`.markdown` / :mod:`.formatting` (text and entities), :mod:`.keyboards`,
:mod:`.files`, :mod:`.ratelimit`, :mod:`.updates` (polling and webhooks),
:mod:`.server` (HTTP) and :mod:`.control` (the ``/sandbox/...`` JSON API).
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
