"""Albums arrive as one update per item; hold the items until the album is complete, then relay them together."""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

log = structlog.get_logger(__name__)

ALBUM_WAIT = 0.5  # seconds without a new item after which an album is complete


class Item(Protocol):
    """An album item: a message (or its plain value) with its id."""

    message_id: int


Deliver = Callable[[list[Any]], Awaitable[None]]


@dataclass(eq=False)
class _Album:
    scope: Hashable
    deliver: Deliver
    items: list[Item] = field(default_factory=list)
    last: float = 0.0
    now: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class Albums:
    """Collects album items per ``(scope, media_group_id)``; a scope is one conversation side (a chat or topic).

    ``flush(scope)`` delivers that scope's albums at once, so a message sent after an album
    is relayed after it.
    """

    def __init__(self, wait: float = ALBUM_WAIT) -> None:
        self.wait = wait
        self._collecting: dict[tuple[Hashable, str], _Album] = {}
        self._albums: set[_Album] = set()

    def add(self, scope: Hashable, media_group_id: str, message: Item, deliver: Deliver) -> None:
        key = (scope, media_group_id)
        album = self._collecting.get(key)
        if album is None:
            album = self._collecting[key] = _Album(scope, deliver)
            self._albums.add(album)
            album.task = asyncio.create_task(self._run(key, album))
        album.items.append(message)
        album.last = time.monotonic()

    async def _run(self, key: tuple[Hashable, str], album: _Album) -> None:
        try:
            while not album.now.is_set() and (left := album.last + self.wait - time.monotonic()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(album.now.wait(), left)
            if self._collecting.get(key) is album:
                del self._collecting[key]
            await album.deliver(sorted(album.items, key=lambda item: item.message_id))
        except Exception:
            log.exception("relay.album_failed", scope=str(album.scope), items=len(album.items))
        finally:
            self._albums.discard(album)

    async def flush(self, scope: Hashable | None = None) -> None:
        """Deliver the albums of ``scope`` (all albums if None) now and wait until they are relayed."""
        albums = [album for album in self._albums if scope is None or album.scope == scope]
        for album in albums:
            album.now.set()
        await asyncio.gather(*(album.task for album in albums if album.task is not None))
