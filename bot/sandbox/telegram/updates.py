"""The bot's update stream: long polling (``getUpdates``) or webhook delivery.

Updates are serialised to JSON when they are created, so later changes to
sandbox state (edits, deletions) never leak into an update already queued —
Telegram's updates are snapshots too.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from .errors import ApiError
from .signals import Notifier

UPDATE_TYPES = frozenset({
    "message", "edited_message", "channel_post", "edited_channel_post", "business_connection",
    "business_message", "edited_business_message", "deleted_business_messages", "message_reaction",
    "message_reaction_count", "inline_query", "chosen_inline_result", "callback_query", "shipping_query",
    "pre_checkout_query", "purchased_paid_media", "poll", "poll_answer", "my_chat_member", "chat_member",
    "chat_join_request", "chat_boost", "removed_chat_boost",
})
DEFAULT_ALLOWED = UPDATE_TYPES - {"chat_member", "message_reaction", "message_reaction_count"}
log = logging.getLogger(__name__)
WEBHOOK_CONFLICT = ApiError(409, "Conflict: can't use getUpdates method while webhook is active; "
                                 "use deleteWebhook to delete the webhook first")
POLL_CONFLICT = ApiError(409, "Conflict: terminated by other getUpdates request; "
                              "make sure that only one bot instance is running")

WebhookReply = Callable[[aiohttp.ClientResponse], Awaitable[None]]


@dataclass(slots=True)
class PendingUpdate:
    """A queued update, already serialised."""

    update_id: int
    chat_id: int | None  # keeps one chat's updates in order across webhook connections
    payload: str


class WebhookDelivery:
    """POSTs updates to the bot's webhook.

    Updates are sharded by chat over ``max_connections`` workers, so one chat's
    updates arrive in order while different chats are delivered concurrently.
    A non-2xx answer or a network error is retried after each of
    ``retry_delays``; then the update is dropped and the error is reported by
    ``getWebhookInfo``.  A 2xx answer may carry a Bot API call (Telegram's
    "reply to the webhook" feature); it is handed to ``on_reply``.
    """

    def __init__(self, url: str, *, secret_token: str | None, max_connections: int,
                 retry_delays: tuple[float, ...], on_reply: WebhookReply) -> None:
        self.url = url
        self.secret_token = secret_token
        self.max_connections = max_connections
        self.retry_delays = retry_delays
        self.last_error_date: int | None = None
        self.last_error_message: str | None = None
        self._on_reply = on_reply
        self._queues: list[asyncio.Queue[PendingUpdate]] = [asyncio.Queue() for _ in range(max_connections)]
        self._in_flight: dict[int, PendingUpdate] = {}
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._workers = [asyncio.create_task(self._work(index)) for index in range(max_connections)]

    @property
    def pending_count(self) -> int:
        """Updates queued or being delivered."""
        return sum(queue.qsize() for queue in self._queues) + len(self._in_flight)

    def enqueue(self, update: PendingUpdate) -> None:
        """Schedule ``update`` for delivery."""
        self._queues[(update.chat_id or 0) % self.max_connections].put_nowait(update)

    async def close(self) -> list[PendingUpdate]:
        """Stop delivering; return the updates that were not delivered, in order."""
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        await self._session.close()
        left = list(self._in_flight.values())
        for queue in self._queues:
            while not queue.empty():
                left.append(queue.get_nowait())
        return sorted(left, key=lambda update: update.update_id)

    async def _work(self, index: int) -> None:
        queue = self._queues[index]
        while True:
            update = await queue.get()
            self._in_flight[index] = update
            try:
                await self._deliver(update)
            except Exception:  # a bug must not silently stop this chat's deliveries
                log.exception("webhook delivery of update %s failed", update.update_id)
            del self._in_flight[index]

    async def _deliver(self, update: PendingUpdate) -> None:
        headers = {"Content-Type": "application/json"}
        if self.secret_token:
            headers["X-Telegram-Bot-Api-Secret-Token"] = self.secret_token
        for delay in (*self.retry_delays, None):
            try:
                async with self._session.post(self.url, data=update.payload, headers=headers) as response:
                    if 200 <= response.status < 300:
                        await self._on_reply(response)
                        return
                    error = f"Wrong response from the webhook: {response.status} {response.reason}"
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                error = f"Connection failed: {type(exc).__name__}: {exc}"
            self.last_error_date, self.last_error_message = int(time.time()), error
            if delay is None:
                return
            await asyncio.sleep(delay)


class UpdateQueue:
    """Creates updates and hands them to ``getUpdates`` or the webhook."""

    def __init__(self, *, on_webhook_reply: WebhookReply, retry_delays: tuple[float, ...]) -> None:
        self.allowed: frozenset[str] = DEFAULT_ALLOWED
        self.webhook: WebhookDelivery | None = None
        self._webhook_allowed: list[str] | None = None
        self._on_webhook_reply = on_webhook_reply
        self._retry_delays = retry_delays
        self._pending: deque[PendingUpdate] = deque()
        self._ids = itertools.count(1)
        self._changed = Notifier()
        self._generation = 0
        self._closed = False

    @property
    def pending_count(self) -> int:
        """Updates not yet confirmed (polling) or delivered (webhook)."""
        return self.webhook.pending_count if self.webhook else len(self._pending)

    def push(self, kind: str, payload: dict[str, Any], chat_id: int | None) -> int | None:
        """Create an update of ``kind``; returns its id, or ``None`` if ``allowed_updates`` filters it out."""
        if kind not in self.allowed:
            return None
        update_id = next(self._ids)
        update = PendingUpdate(update_id, chat_id, json.dumps({"update_id": update_id, kind: payload},
                                                              ensure_ascii=False))
        if self.webhook is not None:
            self.webhook.enqueue(update)
        else:
            self._pending.append(update)
            self._changed.notify()
        return update_id

    def set_allowed(self, allowed: list[str] | None) -> None:
        """Apply an ``allowed_updates`` parameter (``None`` keeps the current setting)."""
        if allowed is not None:
            self.allowed = frozenset(allowed) & UPDATE_TYPES or DEFAULT_ALLOWED

    async def poll(self, *, offset: int | None, limit: int, timeout: float) -> list[str]:
        """``getUpdates``: confirm up to ``offset``, then return queued updates or wait for one."""
        if self.webhook is not None:
            raise WEBHOOK_CONFLICT
        self._generation += 1
        generation = self._generation
        self._changed.notify()  # an older long poll ends with a Conflict
        self._confirm(offset)
        deadline = asyncio.get_running_loop().time() + timeout
        while not self._pending and not self._closed:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            await self._changed.wait(remaining)
            if generation != self._generation:
                raise POLL_CONFLICT
            if self.webhook is not None:
                raise WEBHOOK_CONFLICT
        return [update.payload for update in itertools.islice(self._pending, limit)]

    def _confirm(self, offset: int | None) -> None:
        if offset is None:
            return
        pending = self._pending
        if offset < 0:
            while len(pending) > -offset:
                pending.popleft()
        else:
            while pending and pending[0].update_id < offset:
                pending.popleft()

    async def set_webhook(self, url: str, *, secret_token: str | None, max_connections: int,
                          allowed_updates: list[str] | None, drop_pending: bool) -> None:
        """Start delivering to ``url`` (replacing any previous webhook)."""
        await self.delete_webhook(drop_pending=drop_pending)
        self.set_allowed(allowed_updates)
        self._webhook_allowed = sorted(self.allowed)
        self.webhook = WebhookDelivery(url, secret_token=secret_token, max_connections=max_connections,
                                       retry_delays=self._retry_delays, on_reply=self._on_webhook_reply)
        while self._pending:
            self.webhook.enqueue(self._pending.popleft())
        self._changed.notify()  # a waiting getUpdates ends with a Conflict

    async def delete_webhook(self, *, drop_pending: bool) -> None:
        """Stop webhook delivery; undelivered updates go back to the getUpdates queue."""
        if self.webhook is not None:
            webhook, self.webhook = self.webhook, None
            left = await webhook.close()
            self._pending = deque(sorted([*left, *self._pending], key=lambda update: update.update_id))
        if drop_pending:
            self._pending.clear()

    def webhook_info(self) -> dict[str, Any]:
        """``getWebhookInfo`` result."""
        info: dict[str, Any] = {"url": "", "has_custom_certificate": False, "pending_update_count": self.pending_count}
        webhook = self.webhook
        if webhook is not None:
            info.update(url=webhook.url, max_connections=webhook.max_connections, ip_address="127.0.0.1",
                        allowed_updates=self._webhook_allowed)
            if webhook.last_error_date is not None:
                info.update(last_error_date=webhook.last_error_date, last_error_message=webhook.last_error_message)
        return info

    async def close(self) -> None:
        """End waiting long polls and stop webhook delivery."""
        self._closed = True
        self._changed.notify()
        await self.delete_webhook(drop_pending=False)
