"""The sender's pace: a global token bucket (in process, or shared through Redis), a global
pause after a 429, and 1 message per second per chat.

Tokens are handed out in batches of 100 ms of the rate (2 at 25/s, 100 at 1,000/s: one
database write claims a batch); the bucket holds two batches, so a sender busy writing one
batch loses no tokens, and no burst exceeds 200 ms of the rate.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

BATCH_SECONDS = 0.1
MAX_BATCH = 200


def batch_for(rate: float) -> int:
    return max(1, min(MAX_BATCH, int(rate * BATCH_SECONDS)))


class Bucket(Protocol):
    async def take(self, want: int) -> int:
        """Wait for tokens; return how many were granted (1..``want``)."""

    async def pause(self, seconds: float) -> None:
        """No tokens for anyone during ``seconds`` (Telegram said 429 retry_after)."""


class TokenBucket:
    """The in-process bucket: ``rate`` tokens per second, handed out ``batch`` at a time."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.batch = batch_for(rate)
        self.capacity = 2 * self.batch
        self.clock = clock
        self.tokens = float(self.capacity)
        self.updated = clock()
        self.paused_until = 0.0

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    async def take(self, want: int) -> int:
        want = max(1, want)
        while True:
            now = self.clock()
            if now < self.paused_until:
                await asyncio.sleep(self.paused_until - now)
                continue
            self._refill(now)
            needed = min(want, self.batch)
            if self.tokens >= needed:
                granted = min(want, int(self.tokens))
                self.tokens -= granted
                return granted
            await asyncio.sleep((needed - self.tokens) / self.rate)

    async def pause(self, seconds: float) -> None:
        until = self.clock() + seconds
        if until > self.paused_until:
            self.paused_until = until
            self.tokens = 0.0
            self.updated = until


# KEYS: bucket, pause. ARGV: rate, batch, want. Returns {granted, wait_ms}.
_TAKE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local rate, batch, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local capacity = 2 * batch
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now then return {0, paused - now} end
local state = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate / 1000)
local needed = math.min(want, batch)
local granted = 0
if tokens >= needed then
  granted = math.min(want, math.floor(tokens))
  tokens = tokens - granted
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], 60000)
if granted > 0 then return {granted, 0} end
return {0, math.ceil((needed - tokens) * 1000 / rate)}
"""
_PAUSE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local until_ms = now + tonumber(ARGV[1])
if until_ms > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], tostring(until_ms), 'PX', tonumber(ARGV[1]) + 1000)
end
redis.call('HSET', KEYS[2], 't', '0', 'ts', tostring(until_ms))
return until_ms
"""


class RedisBucket:
    """The same bucket shared by every instance through Redis (one Lua call per batch)."""

    def __init__(self, url: str, rate: float, *, prefix: str = "optobot:broadcast") -> None:
        from redis.asyncio import Redis

        self.redis = Redis.from_url(url)
        self.rate = rate
        self.batch = batch_for(rate)
        self.keys = [f"{prefix}:bucket", f"{prefix}:pause"]
        self._take = self.redis.register_script(_TAKE)
        self._pause = self.redis.register_script(_PAUSE)

    async def take(self, want: int) -> int:
        while True:
            granted, wait_ms = await self._take(keys=self.keys, args=[self.rate, self.batch, max(1, want)])
            if granted:
                return int(granted)
            await asyncio.sleep(int(wait_ms) / 1000)

    async def pause(self, seconds: float) -> None:
        await self._pause(keys=[self.keys[1], self.keys[0]], args=[int(seconds * 1000)])

    async def close(self) -> None:
        await self.redis.aclose()


class ChatSpacing:
    """At most one message per second to a chat: ``delay(chat)`` books the next free slot."""

    def __init__(self, interval: float = 1.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._next: dict[int, float] = {}

    def delay(self, chat_id: int) -> float:
        now = self.clock()
        if len(self._next) > 10_000:
            self._next = {chat: at for chat, at in self._next.items() if at > now}
        slot = max(now, self._next.get(chat_id, 0.0))
        self._next[chat_id] = slot + self.interval
        return slot - now
