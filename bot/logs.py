"""structlog setup: key=value lines on stderr (or one JSON object a line, ``LOG_FORMAT=json``), every secret masked.

Secrets are never passed to loggers on purpose, and the formatter of the log handler masks
them anyway — in structlog events, the aiohttp access log (the webhook secret is a path
segment), third-party loggers and tracebacks alike: the configured secret values, a webhook
path's secret segment, bot tokens, bearer and OAuth tokens.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable

import structlog
from aiohttp.http_exceptions import HttpProcessingError

MASK = "***"
_PATTERNS = (
    (re.compile(r"(/webhooks/[\w-]+/)[^/\s?#\"']+"), r"\1" + MASK),  # the secret path segment of a webhook URL
    (re.compile(r"(?<!\d)\d{5,}:[\w-]{30,}"), MASK),  # a bot token (also inside a Bot API URL)
    (re.compile(r"(?i)(bearer\s+)[\w.~+/=-]+"), r"\1" + MASK),  # an Authorization header value
    (re.compile(r"\beyJ[\w-]+\.[\w-]+\.[\w-]*"), MASK),  # a JWT (amoCRM OAuth tokens)
    (re.compile(r"(?i)((?:access|refresh)_token|client_secret|secret_token|x-telegram-bot-api-secret-token)(['\"]?\s*[:=]\s*['\"]?)"
                r"[^'\"&\s,}]+"), r"\1\2" + MASK),  # a token in a form, query, header or JSON
)


def mask(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with the ``secrets`` and anything that looks like a token replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class MaskingFormatter(logging.Formatter):
    """Formats with ``inner`` (the handler's own formatter), then masks the whole line, traceback included."""

    def __init__(self, inner: logging.Formatter | None, secrets: Iterable[str]) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter("%(message)s")
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)  # longest first: no partial leftovers

    def format(self, record: logging.LogRecord) -> str:
        return mask(self.inner.format(record), self.secrets)


class UnparsedRequests(logging.Filter):
    """aiohttp logs a request it cannot parse (a bad request line, URL or header: answered 400) as an error with a
    traceback; the fault is the sender's, so it becomes one warning line with the reason."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and exc.code == 400:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = "http.bad_request reason=%r", ((str(exc.message).splitlines() or [""])[0],)
            record.exc_info = record.exc_text = None
        return True


_UNPARSED = UnparsedRequests()


def add_secret(secret: str) -> None:
    """Mask ``secret`` too from now on (a secret learnt at run time, e.g. read from the database)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, MaskingFormatter) and secret and secret not in handler.formatter.secrets:
            handler.formatter.secrets = sorted({*handler.formatter.secrets, secret}, key=len, reverse=True)


def setup_logging(level: str = "INFO", *, secrets: Iterable[str] = (), json: bool = False) -> None:
    """Log at ``level`` to stderr; ``json``: every line, third-party loggers' too, one JSON object."""
    logging.basicConfig(level=level.upper(), format="%(message)s")
    secrets = list(secrets)
    stamped: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    for handler in logging.getLogger().handlers:
        inner = handler.formatter.inner if isinstance(handler.formatter, MaskingFormatter) else handler.formatter
        if json:
            inner = structlog.stdlib.ProcessorFormatter(
                foreign_pre_chain=[*stamped, structlog.stdlib.add_logger_name],
                processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                            structlog.processors.format_exc_info, structlog.processors.JSONRenderer(ensure_ascii=False)])
        elif isinstance(inner, structlog.stdlib.ProcessorFormatter):
            inner = logging.Formatter("%(message)s")
        handler.setFormatter(MaskingFormatter(inner, secrets))
    logging.getLogger("aiogram.event").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(_UNPARSED)  # once: the same filter is not added twice
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("python_multipart").setLevel(logging.ERROR)  # a malformed body is logged once, with the answer
    logging.getLogger("weasyprint.progress").setLevel(logging.WARNING)  # rendering steps, even of its own stylesheets
    last: list[structlog.typing.Processor] = (
        [structlog.stdlib.ProcessorFormatter.wrap_for_formatter] if json else
        [structlog.processors.format_exc_info,
         structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"], sort_keys=False)])
    structlog.configure(
        processors=[*stamped, *last],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )
