"""Wake-ups without polling sleeps."""

from __future__ import annotations

import asyncio


class Notifier:
    """Broadcast "something changed" to every coroutine currently waiting.

    Waiters share one :class:`asyncio.Event`, created on demand; :meth:`notify`
    sets it and forgets it, so a waiter sees exactly the notifications that
    happen after it started waiting (and notifying nobody costs nothing).
    Callers check their condition synchronously, then ``await wait(...)`` — no
    wake-up can be lost between the two because the event is taken before the
    first suspension.
    """

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def notify(self) -> None:
        """Wake all current waiters."""
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait(self, timeout: float | None) -> bool:
        """Wait for the next :meth:`notify`; ``False`` if ``timeout`` seconds passed first."""
        if self._event is None:
            self._event = asyncio.Event()
        event = self._event
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            return False
        return True
