"""Telegram's flood limits as token buckets (O(1) per message).

* global: ``global_per_second`` messages per second per bot;
* paid broadcast (``allow_paid_broadcast=true``): a separate ``paid_per_second`` budget
  that replaces the global one for that message;
* per chat: ``per_chat_per_second`` with a burst of ``per_chat_burst``;
* groups: additionally ``group_per_minute`` posts per group chat in any 60 seconds
  (a sliding window, on by default even while the other limits are off), and
  ``topics_per_minute`` forum topics created per group in any 60 seconds.

A message is admitted only if every limit it touches has room; nothing is
consumed otherwise.  The refusal carries the whole seconds to wait (≥ 1).
"""

from __future__ import annotations

import math
import time
from collections import deque
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
    """Current limits: the global and per-chat ones (``enabled``) are off by default, the group ones
    (``group_limits``: posts and topic creations per group per minute) on."""

    enabled: bool = False
    global_per_second: float = 30
    per_chat_per_second: float = 1
    per_chat_burst: int = 3
    group_per_minute: float = 20
    paid_per_second: float = 1000
    group_limits: bool = True
    topics_per_minute: float = 20
    group_window: float = 60  # seconds of the group windows (tests shorten them)


@dataclass(slots=True)
class SlidingWindow:
    """At most ``limit`` events in any ``period`` seconds (the times of the recent ones kept)."""

    limit: int
    period: float = 60.0
    times: deque[float] = field(default_factory=deque)

    def wait_time(self, now: float, count: int) -> float:
        """Seconds until ``count`` more events fit (0 if they do now; never for more than ``limit`` at once)."""
        while self.times and self.times[0] <= now - self.period:
            self.times.popleft()
        over = len(self.times) + min(count, self.limit) - self.limit
        return 0.0 if over <= 0 else self.times[over - 1] + self.period - now

    def add(self, now: float, count: int) -> None:
        self.times.extend([now] * count)


@dataclass(slots=True)
class Throttle:
    """A refusal: which limit was hit and how long to wait."""

    scope: str  # "global" | "paid" | "chat" | "group" | "topics"
    retry_after: int


@dataclass
class RateLimiter:
    """Admits or refuses messages according to :class:`RateLimitConfig`."""

    config: RateLimitConfig = field(default_factory=RateLimitConfig)
    clock: Callable[[], float] = time.monotonic
    _global: dict[str, TokenBucket] = field(default_factory=dict)
    _chats: dict[int | str, TokenBucket] = field(default_factory=dict)
    _groups: dict[int | str, SlidingWindow] = field(default_factory=dict)
    _topics: dict[int | str, SlidingWindow] = field(default_factory=dict)

    def configure(self, config: RateLimitConfig) -> None:
        """Replace the limits and forget all history."""
        self.config = config
        self._global.clear()
        self._chats.clear()
        self._groups.clear()
        self._topics.clear()

    def _bucket(self, table: dict, key: object, capacity: float, rate: float, now: float) -> TokenBucket:
        bucket = table.get(key)
        if bucket is None:
            bucket = table[key] = TokenBucket(capacity, rate, capacity, now)
        return bucket

    def _window(self, table: dict, key: object, per_minute: float) -> SlidingWindow:
        window = table.get(key)
        if window is None:
            window = table[key] = SlidingWindow(max(1, int(per_minute)), self.config.group_window)
        return window

    def admit(self, chat_id: int | str, *, is_group: bool, paid: bool, count: int = 1) -> Throttle | None:
        """Consume ``count`` messages for ``chat_id`` or return the :class:`Throttle` hit."""
        config, now = self.config, self.clock()
        group = None
        if is_group and (config.enabled or config.group_limits):
            group = self._window(self._groups, chat_id, config.group_per_minute)
            wait = group.wait_time(now, count)
            if wait > 0:
                return Throttle("group", max(1, math.ceil(wait)))
        if config.enabled:
            scope = "paid" if paid else "global"
            rate = config.paid_per_second if paid else config.global_per_second
            buckets = [
                (scope, self._bucket(self._global, scope, max(rate, count), rate, now)),
                ("chat", self._bucket(self._chats, chat_id, max(config.per_chat_burst, count),
                                      config.per_chat_per_second, now)),
            ]
            wait, name = max((bucket.wait_time(now, count), name) for name, bucket in buckets)
            if wait > 0:
                return Throttle(name, max(1, math.ceil(wait)))
            for _, bucket in buckets:
                bucket.tokens -= count
        if group is not None:
            group.add(now, count)
        return None

    def admit_topic(self, chat_id: int | str) -> Throttle | None:
        """Count a forum topic created in ``chat_id`` or return the :class:`Throttle` hit."""
        if not self.config.group_limits:
            return None
        now = self.clock()
        window = self._window(self._topics, chat_id, self.config.topics_per_minute)
        wait = window.wait_time(now, 1)
        if wait > 0:
            return Throttle("topics", max(1, math.ceil(wait)))
        window.add(now, 1)
        return None

