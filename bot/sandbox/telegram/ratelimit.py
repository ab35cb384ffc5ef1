"""Telegram's flood limits as token buckets (O(1) per message).

* global: ``global_per_second`` messages per second per bot;
* paid broadcast (``allow_paid_broadcast=true``): a separate ``paid_per_second`` budget
  that replaces the global one for that message;
* per chat: ``per_chat_per_second`` with a burst of ``per_chat_burst``;
* groups: additionally ``group_per_minute`` per group chat.

A message is admitted only if every bucket it touches has room; nothing is
consumed otherwise.  The refusal carries the whole seconds to wait (≥ 1).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass(slots=True)
class TokenBucket:
    """``capacity`` tokens, refilled continuously at ``rate`` tokens per second."""

    capacity: float
    rate: float
    tokens: float
    updated: float

    def wait_time(self, now: float, amount: float) -> float:
        """Seconds until ``amount`` tokens are available (0 if they are now)."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        missing = amount - self.tokens
        return 0.0 if missing <= 1e-9 else missing / self.rate


@dataclass(slots=True)
class RateLimitConfig:
    """Current limits; ``enabled`` is off by default."""

    enabled: bool = False
    global_per_second: float = 30
    per_chat_per_second: float = 1
    per_chat_burst: int = 3
    group_per_minute: float = 20
    paid_per_second: float = 1000


@dataclass(slots=True)
class Throttle:
    """A refusal: which limit was hit and how long to wait."""

    scope: str  # "global" | "paid" | "chat" | "group"
    retry_after: int


@dataclass
class RateLimiter:
    """Admits or refuses messages according to :class:`RateLimitConfig`."""

    config: RateLimitConfig = field(default_factory=RateLimitConfig)
    clock: Callable[[], float] = time.monotonic
    _global: dict[str, TokenBucket] = field(default_factory=dict)
    _chats: dict[int | str, TokenBucket] = field(default_factory=dict)
    _groups: dict[int | str, TokenBucket] = field(default_factory=dict)

    def configure(self, config: RateLimitConfig) -> None:
        """Replace the limits and forget all history."""
        self.config = config
        self._global.clear()
        self._chats.clear()
        self._groups.clear()

    def _bucket(self, table: dict, key: object, capacity: float, rate: float, now: float) -> TokenBucket:
        bucket = table.get(key)
        if bucket is None:
            bucket = table[key] = TokenBucket(capacity, rate, capacity, now)
        return bucket

    def admit(self, chat_id: int | str, *, is_group: bool, paid: bool, count: int = 1) -> Throttle | None:
        """Consume ``count`` messages for ``chat_id`` or return the :class:`Throttle` hit."""
        config = self.config
        if not config.enabled:
            return None
        now = self.clock()
        scope = "paid" if paid else "global"
        rate = config.paid_per_second if paid else config.global_per_second
        buckets = [
            (scope, self._bucket(self._global, scope, max(rate, count), rate, now)),
            ("chat", self._bucket(self._chats, chat_id, max(config.per_chat_burst, count),
                                  config.per_chat_per_second, now)),
        ]
        if is_group:
            per_second = config.group_per_minute / 60
            buckets.append(("group", self._bucket(self._groups, chat_id, max(config.group_per_minute, count),
                                                  per_second, now)))
        wait, name = max((bucket.wait_time(now, count), name) for name, bucket in buckets)
        if wait > 0:
            return Throttle(name, max(1, math.ceil(wait)))
        for _, bucket in buckets:
            bucket.tokens -= count
        return None
