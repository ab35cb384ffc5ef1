"""Background workers: one round after another until stopped, with the same logging and back-off for all."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)

#: One round of work; True when it left more work waiting (the next round starts at once).
Round = Callable[[], Awaitable[bool | None]]
#: What the app runs in the background: a coroutine that returns soon after ``stop`` is set.
Worker = Callable[[asyncio.Event], Awaitable[None]]


async def wait_any(seconds: float, *events: asyncio.Event) -> None:
    """Sleep ``seconds``, or less if one of ``events`` is set."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class Loop:
    """Runs ``round`` until ``stop`` is set; a round under way is finished, never cut off.

    After a round that returns True the next starts at once; otherwise after ``every`` seconds,
    or as soon as ``wake`` is set. A round that raises is logged with its traceback and the next
    waits twice as long after each failure in a row (``every`` × 2ⁿ, at most ``max_backoff``).
    """

    def __init__(self, name: str, round: Round, *, every: float, wake: asyncio.Event | None = None,
                 first_after: float = 0.0, max_backoff: float = 60.0) -> None:
        self.name = name
        self.round = round
        self.every = every
        self.wake = wake
        self.first_after = first_after
        self.max_backoff = max_backoff
        self.failures = 0  # failed rounds in a row

    async def once(self) -> bool:
        """One round (tests); its exception, if any, propagates."""
        return bool(await self.round())

    async def run(self, stop: asyncio.Event) -> None:
        """Round after round until ``stop`` is set."""
        await wait_any(self.first_after, stop)
        while not stop.is_set():
            if self.wake is not None:
                self.wake.clear()  # a wake-up during the round is kept for the pause after it
            try:
                busy = await self.once()
            except Exception:
                self.failures += 1
                delay = min(self.every * 2 ** self.failures, self.max_backoff)
                log.exception("loop.round_failed", loop=self.name, failures=self.failures, retry_in=delay)
                await wait_any(delay, stop)
                continue
            self.failures = 0
            if busy:
                await asyncio.sleep(0)  # let others run between busy rounds
            else:
                await wait_any(self.every, stop, *([self.wake] if self.wake is not None else []))
