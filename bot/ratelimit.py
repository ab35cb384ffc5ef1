"""Rate limits: at most ``limit`` grants in any ``period`` seconds, for this process (:class:`Window`) or
shared by every instance through Redis (:class:`RedisWindow`), behind one interface (:class:`RateLimit`).

A grant counts from when it is taken until ``period`` after it is given back. ``take(n)`` gives its
grants back at once; ``slot(n)`` holds them for the block (the requests they are for), so however late a
request leaves or long it takes, ``limit + 1`` requests can never reach the other side within one period
(as amoCRM and Telegram count). ``ready()`` waits until a grant is free without taking it (to gather what
to send while waiting). ``pause(seconds)`` stops every grant (a 429).
"""
from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

BATCH_SECONDS = 0.1
MAX_BATCH = 200


def paced(rate: float) -> tuple[int, float]:
    """``(limit, period)`` of a steady ``rate`` per second taken in batches of 100 ms of it (at most
    :data:`MAX_BATCH`): the window holds two batches, so no burst exceeds two batches."""
    batch = max(1, min(MAX_BATCH, int(rate * BATCH_SECONDS)))
    return 2 * batch, 2 * batch / rate


class RateLimit(Protocol):
    limit: int

    async def take(self, want: int = 1) -> int:
        """Wait until ``want`` grants (or half the limit, if less) are free; take up to ``want``; how many."""

    def slot(self, want: int = 1) -> AbstractAsyncContextManager[int]:
        """Wait as :meth:`take` does and hold the grants for the block; how many."""

    async def ready(self) -> None:
        """Wait until a grant is free; take none."""

    async def pause(self, seconds: float) -> None:
        """No grants for anyone during ``seconds``."""

    async def close(self) -> None: ...


def least(want: int, limit: int) -> int:
    """How many grants must be free before ``take(want)`` takes any (not one by one while a batch is wanted)."""
    return min(want, max(1, limit // 2))


@dataclass
class _Grant:
    count: int
    ends: float | None  # when it stops counting; None while held


class Window:
    """The limit in this process; waiters are served in order."""

    def __init__(self, limit: int, period: float = 1.0, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.limit, self.period = limit, period
        self._clock, self._sleep = clock, sleep
        self._grants: list[_Grant] = []
        self._lock = asyncio.Lock()
        self._released = asyncio.Event()
        self._paused_until = 0.0

    async def take(self, want: int = 1) -> int:
        grant = await self._grant(max(1, want), held=False)
        return grant.count if grant else 0

    @asynccontextmanager
    async def slot(self, want: int = 1) -> AsyncIterator[int]:
        grant = await self._grant(max(1, want), held=True)
        assert grant is not None
        try:
            yield grant.count
        finally:
            grant.ends = self._clock() + self.period
            self._released.set()

    async def ready(self) -> None:
        await self._grant(1, held=False, peek=True)

    async def _grant(self, want: int, *, held: bool, peek: bool = False) -> _Grant | None:
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._paused_until:
                    await self._sleep(self._paused_until - now)
                    continue
                self._grants = [g for g in self._grants if g.ends is None or g.ends >= now]
                free = self.limit - sum(g.count for g in self._grants)
                if free >= least(want, self.limit):
                    if peek:
                        return None
                    grant = _Grant(min(want, free), None if held else now + self.period)
                    self._grants.append(grant)
                    return grant
                ending = [g.ends for g in self._grants if g.ends is not None]
                self._released.clear()
                if ending:
                    await self._sleep(min(ending) - now + 1e-3)
                else:
                    await self._released.wait()

    async def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    async def close(self) -> None:
        """Nothing to release (the same interface as :class:`RedisWindow`)."""


# KEYS: the window (a sorted set of grants "<id>:<count>", scored by when they stop counting, in ms of
# the Redis clock) and the pause. ARGV[1] is the operation: take (limit, period, want, least, id, hold:
# a held grant counts until ``hold`` from now, so a dead process frees it; peek: take nothing), release (id,
# period: it counts until ``period`` from now, again if its hold ran out meanwhile), pause (ms). take returns
# {granted, ms to wait} (peek: {free, 0} once ``least`` are free).
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op = ARGV[1]
if op == 'release' then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
  if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3])) end
  return 0
end
if op == 'pause' then
  local until_ms = now + tonumber(ARGV[2])
  if until_ms > tonumber(redis.call('GET', KEYS[2]) or '0') then
    redis.call('SET', KEYS[2], tostring(until_ms), 'PX', tonumber(ARGV[2]) + 1000)
  end
  return 0
end
local limit, period, want, least, hold = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[7])
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now then return {0, paused - now} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
local used = 0
for _, grant in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  used = used + tonumber(string.match(grant, ':(%d+)$') or '1')  -- a grant without a count is one
end
local free = limit - used
if free >= least and ARGV[8] == 'peek' then return {free, 0} end
if free >= least then
  local granted = math.min(want, free)
  local lasts = hold > 0 and hold or period
  redis.call('ZADD', KEYS[1], now + lasts, ARGV[6] .. ':' .. granted)
  if redis.call('PTTL', KEYS[1]) < lasts + period then redis.call('PEXPIRE', KEYS[1], lasts + period) end
  return {granted, 0}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, math.max(1, math.min(tonumber(first[2]) - now + 1, 50))}
"""


class RedisWindow:
    """The same limit kept in Redis under ``key``, so that all instances share it (one script call per grant)."""

    def __init__(self, redis_url: str, key: str, limit: int, period: float = 1.0, *, hold: float = 120.0) -> None:
        from redis.asyncio import Redis

        self.limit = limit
        self.period_ms, self.hold_ms = int(period * 1000), int(hold * 1000)
        self.redis = Redis.from_url(redis_url)
        self.keys = [key, f"{key}:pause"]
        self._script = self.redis.register_script(_SCRIPT)
        self._local = asyncio.Lock()  # this process's waiters in order

    async def _grant(self, want: int, hold_ms: int, *, peek: bool = False) -> tuple[int, str]:
        grant_id = uuid.uuid4().hex
        async with self._local:
            while True:
                granted, wait_ms = await self._script(keys=self.keys, args=[
                    "take", self.limit, self.period_ms, want, least(want, self.limit), grant_id, hold_ms,
                    "peek" if peek else "take"])
                if granted:
                    return int(granted), f"{grant_id}:{int(granted)}"
                await asyncio.sleep(int(wait_ms) / 1000)

    async def take(self, want: int = 1) -> int:
        return (await self._grant(max(1, want), 0))[0]

    @asynccontextmanager
    async def slot(self, want: int = 1) -> AsyncIterator[int]:
        granted, grant = await self._grant(max(1, want), self.hold_ms)
        try:
            yield granted
        finally:
            await self._script(keys=self.keys, args=["release", grant, self.period_ms])

    async def ready(self) -> None:
        await self._grant(1, 0, peek=True)

    async def pause(self, seconds: float) -> None:
        await self._script(keys=self.keys, args=["pause", int(seconds * 1000)])

    async def close(self) -> None:
        await self.redis.aclose()


def rate_limit(limit: int, period: float = 1.0, *, redis_url: str | None, key: str, hold: float = 120.0) -> Window | RedisWindow:
    """Shared through Redis under ``key`` when ``redis_url`` is set (a held grant frees itself after ``hold``
    seconds, should its process die), else this process's own."""
    return RedisWindow(redis_url, key, limit, period, hold=hold) if redis_url else Window(limit, period)


class ChatSpacing:
    """At most one message per ``interval`` to a chat: ``await delay(chat)`` books the next free moment (seconds)."""

    def __init__(self, interval: float = 1.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._next: dict[int, float] = {}

    async def delay(self, chat_id: int) -> float:
        now = self.clock()
        if len(self._next) > 10_000:
            self._next = {chat: at for chat, at in self._next.items() if at > now}
        slot = max(now, self._next.get(chat_id, 0.0))
        self._next[chat_id] = slot + self.interval
        return slot - now

    async def close(self) -> None:
        """Nothing to release (the same interface as :class:`RedisChatSpacing`)."""


# KEYS[1]: the chat's next free moment (ms of the Redis clock); ARGV[1]: the interval in ms. Returns ms to wait.
_SPACING_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local slot = math.max(now, tonumber(redis.call('GET', KEYS[1]) or '0'))
local interval = tonumber(ARGV[1])
redis.call('SET', KEYS[1], tostring(slot + interval), 'PX', slot - now + interval + 1000)
return slot - now
"""


class RedisChatSpacing:
    """:class:`ChatSpacing` kept in Redis under ``prefix:<chat>``, so that all instances space one chat together."""

    def __init__(self, redis_url: str, prefix: str, interval: float = 1.0) -> None:
        from redis.asyncio import Redis

        self.interval = interval
        self.prefix = prefix
        self.redis = Redis.from_url(redis_url)
        self._script = self.redis.register_script(_SPACING_SCRIPT)

    async def delay(self, chat_id: int) -> float:
        return int(await self._script(keys=[f"{self.prefix}:{chat_id}"], args=[int(self.interval * 1000)])) / 1000

    async def close(self) -> None:
        await self.redis.aclose()


def chat_spacing(interval: float = 1.0, *, redis_url: str | None, prefix: str) -> ChatSpacing | RedisChatSpacing:
    """Shared through Redis under ``prefix`` when ``redis_url`` is set, else this process's own."""
    return RedisChatSpacing(redis_url, prefix, interval) if redis_url else ChatSpacing(interval)
