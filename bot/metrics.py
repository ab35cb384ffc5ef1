"""Prometheus metrics: every series optobot exports, defined once here; ``GET /metrics`` renders them.

Each instance exports its own series (Prometheus scrapes every instance). Only the service process
records into them: a catalogue render is timed around its call to the worker pool (waiting included),
so the render worker processes need no shared metric files. The gauges read from the database
(the CRM outbox, the inbox's lag) are refreshed by the probes the features register, at each scrape.
"""
from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

log = structlog.get_logger(__name__)

#: A probe refreshes gauges from the database just before a scrape.
Probe = Callable[[], Awaitable[None]]

_FAST = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_SLOW = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)

GREETING = Histogram("optobot_greeting_seconds", "/start received → greeting sent", buckets=_FAST)
CATALOG_RENDER = Histogram("optobot_catalog_render_seconds", "one catalogue render: its wait for a worker and the render", buckets=_SLOW)
RENDER_QUEUE = Gauge("optobot_render_queue", "catalogue renders submitted to the worker pool and not finished")
RELAY = Histogram("optobot_relay_seconds", "buyer message (its Telegram date, whole seconds) → copy posted in the operator topic",
                  buckets=_SLOW)
CRM_OUTBOX_DEPTH = Gauge("optobot_crm_outbox_depth", "amoCRM operations waiting in the outbox (pending or in flight)")
CRM_OUTBOX_AGE = Gauge("optobot_crm_outbox_oldest_seconds", "age of the oldest unfinished amoCRM operation (0: none)")
AMOCRM_ERRORS = Counter("optobot_amocrm_errors", "amoCRM answers that make the client back off", ["status"])  # 429 | 5xx
BROADCAST = Counter("optobot_broadcast_messages", "broadcast sends by outcome", ["outcome"])  # sent | retry_after | retried | unknown | failed | blocked
SLA_BREACHES = Counter("optobot_sla_breaches", "operator-chat answers overdue (level 1: the manager pinged, 2: escalated)", ["level"])
INBOX_LAG = Gauge("optobot_inbox_lag_seconds", "age of the oldest Telegram update stored and not yet handled (0: none)")
RECEIVER = Gauge("optobot_update_receiver", "1 on the one instance elected to receive Telegram's updates (it polls or registers the webhook)")
TELEGRAM_REACHED = Gauge("optobot_telegram_reached_timestamp_seconds", "when a Bot API call last got an answer (Unix time)")

_last_reached = 0.0


def reached() -> None:
    """A Bot API call got an answer (any answer: Telegram was reached)."""
    global _last_reached
    _last_reached = time.time()
    TELEGRAM_REACHED.set(_last_reached)


def reached_ago() -> float:
    """Seconds since Telegram last answered this process (infinite: never)."""
    return time.time() - _last_reached if _last_reached else float("inf")


async def render(probes: list[Probe]) -> tuple[bytes, str]:
    """The exposition text (after every probe ran; a failing probe is logged and leaves its gauges as they were)."""
    for probe in probes:
        try:
            await probe()
        except Exception:
            log.warning("metrics.probe_failed", probe=getattr(probe, "__qualname__", repr(probe)), exc_info=True)
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
