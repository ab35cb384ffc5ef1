"""Request rate limits: never more than N requests in any window of one second.

One :class:`SlidingWindow` per process; with ``REDIS_URL`` a :class:`RedisWindow` shares the
same limit between every instance talking to the same amoCRM account.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol


class Limiter(Protocol):
    async def acquire(self) -> None: ...


class SlidingWindow:
    """At most ``rate`` acquisitions in any ``period`` seconds; waiters are served in order."""

    def __init__(
        self, rate: int, period: float = 1.0, *,
        clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate, self.period = rate, period
        self._clock, self._sleep = clock, sleep
        self._stamps: deque[float] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                while self._stamps and now - self._stamps[0] > self.period:
                    self._stamps.popleft()
                if len(self._stamps) < self.rate:
                    self._stamps.append(now)
                    return
                await self._sleep(self._stamps[0] + self.period - now + 1e-3)


# A sorted set of request times (server clock, ms); a slot is taken only if fewer than the
# limit were taken in the closed window [now - period, now]. Returns 0 or the ms to wait.
_TAKE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local limit, period = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - period))
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], period * 2)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + period - now + 1)
"""


class RedisWindow:
    """The same sliding window, kept in Redis so that all instances share it."""

    def __init__(self, redis_url: str, key: str, rate: int, period: float = 1.0) -> None:
        from redis.asyncio import Redis

        self.rate, self.period_ms, self.key = rate, int(period * 1000), key
        self._redis = Redis.from_url(redis_url)
        self._take = self._redis.register_script(_TAKE)
        self._local = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._local:
            while True:
                wait_ms = int(await self._take(keys=[self.key], args=[self.rate, self.period_ms, uuid.uuid4().hex]))
                if wait_ms == 0:
                    return
                await asyncio.sleep(wait_ms / 1000)

    async def close(self) -> None:
        await self._redis.aclose()


def create_limiter(rate: int, redis_url: str | None, account: str) -> SlidingWindow | RedisWindow:
    """A Redis-shared limiter when ``redis_url`` is set, else one for this process."""
    if redis_url:
        return RedisWindow(redis_url, f"optobot:amocrm:rate:{account}", rate)
    return SlidingWindow(rate)
