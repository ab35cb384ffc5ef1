"""Request rate limits: never more than N requests in any window of one second, as amoCRM counts them.

A request holds its slot from before it is sent until its answer is in, and the second
counts from then: however late a request leaves or long it takes, N + 1 requests can never
reach amoCRM within one second. One :class:`SlidingWindow` per process; with ``REDIS_URL``
a :class:`RedisWindow` shares the limit between every instance using the same account.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol


class Limiter(Protocol):
    def slot(self) -> AsyncIterator[None]: ...


@dataclass
class _Slot:
    done_at: float | None = None  # None while the request is in flight


class SlidingWindow:
    """At most ``rate`` slots per ``period`` seconds, each counted until ``period`` after its request ended."""

    def __init__(
        self, rate: int, period: float = 1.0, *,
        clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate, self.period = rate, period
        self._clock, self._sleep = clock, sleep
        self._slots: list[_Slot] = []
        self._lock = asyncio.Lock()
        self._released = asyncio.Event()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for a free slot (waiters in order), hold it for the request."""
        taken = await self._take()
        try:
            yield
        finally:
            taken.done_at = self._clock()
            self._released.set()

    async def _take(self) -> _Slot:
        async with self._lock:
            while True:
                now = self._clock()
                self._slots = [s for s in self._slots if s.done_at is None or now - s.done_at <= self.period]
                if len(self._slots) < self.rate:
                    taken = _Slot()
                    self._slots.append(taken)
                    return taken
                ended = [s.done_at for s in self._slots if s.done_at is not None]
                self._released.clear()
                if ended:
                    await self._sleep(min(ended) + self.period - now + 1e-3)
                else:
                    await self._released.wait()


# A sorted set of slots scored by when they stop counting (ms, Redis clock). A slot in flight
# counts until ``hold`` ms from now (so a dead process frees it), then until ``period`` after its end.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit, period, hold = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now + hold, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], hold + period)
  return 0
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, math.min(tonumber(first[2]) - now + 1, 50))
"""
_RELEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
"""


class RedisWindow:
    """The same window kept in Redis, so that all instances share one limit."""

    def __init__(self, redis_url: str, key: str, rate: int, period: float = 1.0, hold: float = 120.0) -> None:
        from redis.asyncio import Redis

        self.rate, self.key = rate, key
        self.period_ms, self.hold_ms = int(period * 1000), int(hold * 1000)
        self._redis = Redis.from_url(redis_url)
        self._take = self._redis.register_script(_TAKE)
        self._release = self._redis.register_script(_RELEASE)
        self._local = asyncio.Lock()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        member = uuid.uuid4().hex
        async with self._local:
            while wait_ms := int(await self._take(keys=[self.key], args=[self.rate, self.period_ms, member, self.hold_ms])):
                await asyncio.sleep(wait_ms / 1000)
        try:
            yield
        finally:
            await self._release(keys=[self.key], args=[member, self.period_ms])

    async def close(self) -> None:
        await self._redis.aclose()


def create_limiter(rate: int, redis_url: str | None, account: str) -> SlidingWindow | RedisWindow:
    """A Redis-shared limiter when ``redis_url`` is set, else one for this process."""
    if redis_url:
        return RedisWindow(redis_url, f"optobot:amocrm:rate:{account}", rate)
    return SlidingWindow(rate)
