"""``TelegramSandbox``: the test double of Telegram, and its Python control surface."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterable
from types import EllipsisType
from typing import Any

from .control import ControlApi
from .core import CallRecord, Core, ThrottleRecord
from .errors import SandboxError
from .files import KINDS, FileStore, media_fields
from .formatting import detect_entities
from .keyboards import callback_buttons
from .methods import new_media_group_id
from .ratelimit import RateLimitConfig
from .server import ApiServer
from .state import Chat, Message, User, is_service, wire

MessagePredicate = Callable[[Message], bool]
CallPredicate = Callable[[CallRecord], bool]

_MEMBER_STATUSES = ("creator", "administrator", "member")
_CAPTIONLESS = {"sticker", "video_note", "location", "contact"}
_ENVELOPE_KEYS = frozenset({"message_id", "from", "chat", "date", "message_thread_id", "is_topic_message",
                            "reply_to_message", "edit_date", "reply_markup", "media_group_id"})


class TelegramSandbox:
    """An in-process Telegram Bot API server for one bot.

    Point aiogram at it with
    ``Bot(token, session=AiohttpSession(api=TelegramAPIServer.from_base(base_url)))``.
    Tests create users and groups, act as users (``send_text``, ``click``, ...),
    and read back what the bot did (``messages``, ``wait_for_messages``,
    ``calls``).  The same controls are served as JSON under ``/sandbox/<name>``
    for out-of-process use (see :mod:`.control`).

    Message dicts returned by the reading methods are the sandbox's live
    records (they reflect later edits); treat them as read-only.
    """

    def __init__(
        self,
        token: str = "123456:TEST",
        bot_username: str = "optobot_sandbox_bot",
        *,
        bot_first_name: str = "OptoBot Sandbox",
        strict_html: bool = True,
        delay: float = 0.0,
        webhook_retry_delays: tuple[float, ...] = (0.05, 0.2, 0.5),
    ) -> None:
        bot = User(id=int(token.split(":", 1)[0]), first_name=bot_first_name, username=bot_username, is_bot=True)
        self._core = Core.create(token, bot, strict_html=strict_html, webhook_retry_delays=webhook_retry_delays,
                                 on_webhook_reply=lambda response: self._server.webhook_reply(response))
        self._server = ApiServer(self._core, ControlApi(self).handle)
        self._state = self._core.state
        self._query_ids = itertools.count(1)
        self.base_url: str | None = None
        if delay:
            self.set_delay(delay)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0 = a free port); returns the base URL ``http://host:port``."""
        self.base_url = await self._server.start(host, port)
        return self.base_url

    async def stop(self) -> None:
        """End long polls, stop webhook delivery and the HTTP server."""
        await self._core.updates.close()
        await self._server.stop()

    async def __aenter__(self) -> TelegramSandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- what the sandbox recorded ---------------------------------------------------------

    @property
    def token(self) -> str:
        """The bot token the sandbox accepts."""
        return self._core.token

    @property
    def bot(self) -> dict[str, Any]:
        """The bot's ``User`` dict."""
        return self._state.bot_dict

    @property
    def calls(self) -> list[CallRecord]:
        """Every Bot API call, in completion order."""
        return self._core.calls

    @property
    def callback_answers(self) -> list[dict[str, Any]]:
        """``answerCallbackQuery`` calls: query id, user, chat, message, data, text, show_alert, url, cache_time."""
        return self._core.callback_answers

    @property
    def files(self) -> FileStore:
        """``file_id → bytes`` of every file known to the sandbox."""
        return self._core.files

    @property
    def throttles(self) -> list[ThrottleRecord]:
        """Every 429 answered (flood control or injected)."""
        return self._core.throttles

    @property
    def pending_updates(self) -> int:
        """Updates not yet confirmed by getUpdates / delivered to the webhook."""
        return self._core.updates.pending_count

    # -- setting up the world --------------------------------------------------------------

    def add_user(self, user_id: int, first_name: str, last_name: str | None = None, username: str | None = None,
                 language_code: str | None = "ru", *, started: bool = False) -> dict[str, Any]:
        """Create a Telegram user; returns the ``User`` dict.

        The bot can write to them only once they "started" the bot: any user
        action in the private chat does that, or pass ``started=True``.
        """
        user = User(user_id, first_name, last_name, username, language_code, started=started)
        self._state.add_user(user)
        return user.to_dict()

    def add_group(self, chat_id: int, title: str, *, forum: bool = True, members: Iterable[int] = (),
                  admins: Iterable[int] = (), owner: int | None = None, bot_admin: bool = True,
                  can_manage_topics: bool = True) -> dict[str, Any]:
        """Create a group (a supergroup if it is a forum or its id starts with -100); returns the ``Chat`` dict."""
        kind = "supergroup" if forum or str(chat_id).startswith("-100") else "group"
        chat = Chat(chat_id, kind, title=title, is_forum=forum, bot_admin=bot_admin,
                    can_manage_topics=bot_admin and can_manage_topics)
        for status, user_ids in (("member", members), ("administrator", admins), ("creator", [owner])):
            for user_id in user_ids:
                if user_id is not None:
                    self._state.user(user_id)
                    chat.members[user_id] = status
        self._state.add_group(chat)
        return chat.to_dict()

    def set_profile_photo(self, user_id: int, content: bytes = b"sandbox avatar") -> list[dict[str, Any]]:
        """The user sets a new profile photo (``getUserProfilePhotos`` lists it first); returns its PhotoSize list."""
        sizes: list[dict[str, Any]] = self.files.add("photo", content, attributes={"width": 640, "height": 640}).media
        self._state.user(user_id).photos.insert(0, sizes)
        return sizes

    def block(self, user_id: int) -> None:
        """The user blocks the bot (403 on sends; a ``my_chat_member`` update if they had started it)."""
        user = self._state.user(user_id)
        if not user.blocked:
            user.blocked = True
            if user.started:
                self._push_my_chat_member(user, "member", "kicked")

    def unblock(self, user_id: int) -> None:
        """The user unblocks (restarts) the bot."""
        user = self._state.user(user_id)
        if user.blocked:
            user.blocked = False
            user.started = True
            self._push_my_chat_member(user, "kicked", "member")

    def deactivate(self, user_id: int) -> None:
        """The user deletes their account (403 "user is deactivated" on sends)."""
        self._state.user(user_id).deactivated = True

    def join(self, chat_id: int, user_id: int, *, status: str = "member") -> Message:
        """``user_id`` joins group ``chat_id``; returns the ``new_chat_members`` service message."""
        chat, user = self._group(chat_id), self._state.user(user_id)
        return self._change_membership(chat, user, status, {"new_chat_members": [user.to_dict()]})

    def leave(self, chat_id: int, user_id: int) -> Message:
        """``user_id`` leaves group ``chat_id``; returns the ``left_chat_member`` service message."""
        chat, user = self._group(chat_id), self._state.user(user_id)
        return self._change_membership(chat, user, "left", {"left_chat_member": user.to_dict()})

    # -- acting as users ---------------------------------------------------------------

    def send_text(self, user_id: int, text: str, *, chat_id: int | None = None, message_thread_id: int | None = None,
                  reply_to: Message | int | None = None) -> Message:
        """The user writes ``text`` (``"/start payload"`` gets its ``bot_command`` entity); returns the message."""
        if not text:
            raise SandboxError("a user can't send an empty message")
        content: dict[str, Any] = {"text": text}
        entities = detect_entities(text, [])
        if entities:
            content["entities"] = entities
        return self._post(user_id, content, chat_id, message_thread_id, reply_to)

    def send_media(self, user_id: int, kind: str, *, chat_id: int | None = None,
                   message_thread_id: int | None = None, caption: str | None = None,
                   media_group_id: str | None = None, reply_to: Message | int | None = None,
                   **fields: Any) -> Message:
        """The user sends a photo/document/voice/video/video_note/sticker/audio/animation/location/contact.

        File kinds take ``content`` (bytes; a placeholder by default), ``file_name``,
        ``mime_type`` and media attributes (``duration``, ``width``, ...).  A location
        takes ``latitude``/``longitude``; a contact takes ``phone_number``,
        ``first_name``, ``last_name`` and ``contact_user_id``.
        """
        user = self._state.user(user_id)
        content = self._media_content(user, kind, fields)
        if caption and kind not in _CAPTIONLESS:
            content["caption"] = caption
            entities = detect_entities(caption, [])
            if entities:
                content["caption_entities"] = entities
        if media_group_id is not None:
            content["media_group_id"] = media_group_id
        return self._post(user_id, content, chat_id, message_thread_id, reply_to)

    def send_contact(self, user_id: int, phone_number: str, *, contact_user_id: int | None | EllipsisType = ...,
                     first_name: str | None = None, last_name: str | None = None, chat_id: int | None = None,
                     message_thread_id: int | None = None) -> Message:
        """The user shares a contact; by default their own (as a ``request_contact`` button does,
        ``contact.user_id`` = sender).  Pass ``contact_user_id=None`` for a contact without a user."""
        return self.send_media(user_id, "contact", chat_id=chat_id, message_thread_id=message_thread_id,
                               phone_number=phone_number, first_name=first_name, last_name=last_name,
                               contact_user_id=user_id if contact_user_id is ... else contact_user_id)

    def send_album(self, user_id: int, items: Iterable[str | dict[str, Any]], *, chat_id: int | None = None,
                   message_thread_id: int | None = None, reply_to: Message | int | None = None) -> list[Message]:
        """The user sends an album: messages sharing one ``media_group_id``, each its own update.

        ``items`` are kinds (``"photo"``) or dicts ``{"kind": "photo", "caption": ..., **fields}``.
        """
        group_id = new_media_group_id()
        sent = []
        for item in items:
            fields = {"kind": item} if isinstance(item, str) else dict(item)
            kind = fields.pop("kind", "photo")
            sent.append(self.send_media(user_id, kind, chat_id=chat_id, message_thread_id=message_thread_id,
                                        media_group_id=group_id, reply_to=reply_to, **fields))
        return sent

    def edit_text(self, user_id: int, chat_id: int, message_id: int, new_text: str) -> Message:
        """The user edits their text message; queues an ``edited_message`` update."""
        chat = self._state.chat(chat_id)
        message = chat.messages.get(message_id)
        if message is None or message["from"]["id"] != user_id or "text" not in message:
            raise SandboxError(f"user {user_id} has no text message {message_id} in chat {chat_id}")
        changes: dict[str, Any] = {"text": new_text}
        entities = detect_entities(new_text, [])
        if entities:
            changes["entities"] = entities
        self._state.update_message(chat, message, changes, removed=("entities",))
        self._core.updates.push("edited_message", wire(message), chat.id)
        return message

    def click(self, user_id: int, message: Message, callback_data: str) -> dict[str, Any]:
        """The user presses the inline button with ``callback_data`` under ``message``.

        Raises :class:`SandboxError` unless the message (still) has that button.
        Queues a ``callback_query`` update; returns the CallbackQuery dict.
        """
        user = self._state.user(user_id)
        chat = self._state.chat(message["chat"]["id"])
        stored = chat.messages.get(message["message_id"])
        if stored is None:
            raise SandboxError(f"message {message['message_id']} no longer exists in chat {chat.id}")
        buttons = callback_buttons(stored.get("reply_markup"))
        if callback_data not in buttons:
            raise SandboxError(f"message {stored['message_id']} in chat {chat.id} has no button with "
                               f"callback_data {callback_data!r}; it has {sorted(buttons)}")
        self._check_access(user, chat)
        query = {"id": f"{self._state.bot.id}{next(self._query_ids):010d}", "from": user.to_dict(),
                 "message": wire(stored), "chat_instance": str(abs(chat.id) * 7919 + 1), "data": callback_data}
        self._core.callback_queries[query["id"]] = query
        self._core.updates.push("callback_query", query, chat.id)
        return query

    # -- reading what the bot did ------------------------------------------------------------

    def messages(self, chat_id: int, *, thread_id: int | None = None, from_bot: bool | None = None,
                 include_service: bool = False) -> list[Message]:
        """Messages of a chat in order (optionally one topic / only the bot's / only users')."""
        bot_id = self._state.bot.id
        return [
            message for message in self._state.chat(chat_id).messages.values()
            if (thread_id is None or message.get("message_thread_id") == thread_id)
            and (from_bot is None or (message["from"]["id"] == bot_id) == from_bot)
            and (include_service or not is_service(message))
        ]

    def last(self, chat_id: int, *, thread_id: int | None = None, from_bot: bool | None = True) -> Message:
        """The latest (by default: bot-sent) message of a chat."""
        bot_id = self._state.bot.id
        for message in reversed(self._state.chat(chat_id).messages.values()):
            if ((thread_id is None or message.get("message_thread_id") == thread_id)
                    and (from_bot is None or (message["from"]["id"] == bot_id) == from_bot)
                    and not is_service(message)):
                return message
        raise SandboxError(f"no matching message in chat {chat_id}\n{self._dump(chat_id)}")

    def topics(self, chat_id: int) -> list[dict[str, Any]]:
        """Forum topics of a chat: ``ForumTopic`` dicts plus ``is_closed``."""
        return [topic.to_dict() for topic in self._state.chat(chat_id).topics.values()]

    def reply_keyboard(self, chat_id: int) -> dict[str, Any] | None:
        """The reply keyboard the chat currently shows (``None`` after ``remove_keyboard``)."""
        return self._state.chat(chat_id).reply_keyboard

    def bot_commands(self, scope: dict[str, Any] | None = None, language_code: str = "") -> list[dict[str, Any]]:
        """Commands set by ``setMyCommands`` for ``scope`` (default scope by default)."""
        return self._core.commands.get((json.dumps(scope or {"type": "default"}, sort_keys=True), language_code), [])

    async def wait_for_messages(self, chat_id: int, count: int, *, timeout: float = 5.0,
                                thread_id: int | None = None,
                                predicate: MessagePredicate | None = None) -> list[Message]:
        """Wait until the bot has ≥ ``count`` messages (matching ``predicate``) in the chat; return them all.

        Raises :class:`TimeoutError` describing the chat and recent failed calls otherwise.
        """
        chat = self._state.chat(chat_id)
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self.messages(chat_id, thread_id=thread_id, from_bot=True)
                     if predicate is None or predicate(m)]
            remaining = deadline - time.monotonic()
            if len(found) >= count:
                return found
            if remaining <= 0:
                raise TimeoutError(f"waited {timeout}s for {count} bot message(s) in chat {chat_id}"
                                   f"{f' thread {thread_id}' if thread_id else ''}, got {len(found)}\n"
                                   f"{self._dump(chat_id)}")
            await chat.changed.wait(remaining)

    async def wait_for_call(self, method: str, *, predicate: CallPredicate | None = None, timeout: float = 5.0,
                            since: float | None = None) -> CallRecord:
        """Wait for a finished call of ``method`` (matching ``predicate``) and return its record.

        ``since`` (a :func:`time.perf_counter` value) ignores calls that arrived earlier;
        without it the first matching call ever made is returned.
        """
        calls, name = self._core.calls, method.lower()
        index = 0
        if since is not None:
            index = len(calls)
            while index > 0 and calls[index - 1].finished_at >= since:
                index -= 1
        deadline = time.monotonic() + timeout
        while True:
            for call in calls[index:]:
                if (call.method.lower() == name and (since is None or call.started_at >= since)
                        and (predicate is None or predicate(call))):
                    return call
            index = len(calls)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                recent = "\n".join(f"  {c.method} chat={c.chat_id} ok={c.ok} {c.description or ''}"
                                   for c in calls[-10:])
                raise TimeoutError(f"waited {timeout}s for a {method} call; last calls:\n{recent or '  (none)'}")
            await self._core.calls_changed.wait(remaining)

    # -- behaviour switches -------------------------------------------------------------------

    def rate_limits(self, enabled: bool = True, *, global_per_second: float = 30, per_chat_per_second: float = 1,
                    per_chat_burst: int = 3, group_per_minute: float = 20, paid_per_second: float = 1000,
                    group_limits: bool = True, topics_per_minute: float = 20, group_window: float = 60) -> None:
        """Set Telegram's flood limits and reset their history: the global and per-chat ones switch with
        ``enabled`` (off by default); the group ones (``group_per_minute`` posts, ``topics_per_minute``
        topics created, per group in any ``group_window`` seconds, 60 like Telegram's) with ``group_limits``
        (on by default)."""
        self._core.limiter.configure(RateLimitConfig(enabled, global_per_second, per_chat_per_second,
                                                     per_chat_burst, group_per_minute, paid_per_second,
                                                     group_limits, topics_per_minute, group_window))

    def fail_next(self, method: str, *, error_code: int, description: str | None = None,
                  retry_after: int | None = None, count: int = 1, chat_id: int | str | None = None) -> None:
        """Make the next ``count`` calls of ``method`` (to ``chat_id``, if given) fail before doing anything;
        ``method="file"``: file downloads (``/file/bot<token>/<path>``).

        ``description`` defaults to Telegram's generic wording for ``error_code``
        (``"Too Many Requests: retry after N"`` for 429).
        """
        if error_code == 429 and retry_after is None:
            retry_after = 1
        self._core.faults.add(method, error_code=error_code, description=description, retry_after=retry_after,
                              count=count, chat_id=chat_id)

    def drop_next(self, method: str, *, executed: bool = True, count: int = 1, chat_id: int | str | None = None) -> None:
        """The next ``count`` calls of ``method`` (to ``chat_id``, if given) get no answer: the request arrives and
        the connection is dropped instead of answering it, as when the network or a proxy on the way fails while the
        bot waits. With ``executed`` (the default) the call is carried out first (the message is delivered, only the
        answer is lost); without it, it is not. The bot cannot tell which: its outcome is unknown. Recorded in
        :attr:`calls` with ``dropped=True``."""
        self._core.faults.add_drop(method, executed=executed, count=count, chat_id=chat_id)

    def outage(self, method: str, *, seconds: float, error_code: int = 502, retry_after: int | None = None,
               chat_id: int | str | None = None) -> None:
        """Telegram down for ``method``: every call of it (to ``chat_id``, if given: a chat's flood wait is a 429
        with ``retry_after``) answers ``error_code`` (502 Bad Gateway by default) for the next ``seconds``;
        ``seconds=0`` ends it."""
        if error_code == 429 and retry_after is None:
            retry_after = 1
        self._core.faults.outage(method, error_code=error_code, seconds=seconds, retry_after=retry_after, chat_id=chat_id)

    def set_delay(self, seconds: float, *, method: str | None = None) -> None:
        """Delay answers to ``method`` (or every call) by ``seconds``; 0 removes the delay."""
        key = method.lower() if method else None
        if seconds > 0:
            self._core.delays[key] = seconds
        else:
            self._core.delays.pop(key, None)

    # -- internals --------------------------------------------------------------------------

    def _group(self, chat_id: int) -> Chat:
        chat = self._state.chat(chat_id)
        if not chat.is_group:
            raise SandboxError(f"chat {chat_id} is not a group")
        return chat

    def _check_access(self, user: User, chat: Chat) -> None:
        if user.deactivated:
            raise SandboxError(f"user {user.id} is deactivated")
        if chat.user is not None:
            if chat.user is not user:
                raise SandboxError(f"chat {chat.id} is the private chat of another user")
            if user.blocked:
                raise SandboxError(f"user {user.id} has blocked the bot; call unblock() first")
        elif chat.members.get(user.id) not in _MEMBER_STATUSES:
            raise SandboxError(f"user {user.id} is not a member of chat {chat.id}; call join() first")

    def _post(self, user_id: int, content: dict[str, Any], chat_id: int | None, thread_id: int | None,
              reply_to: Message | int | None) -> Message:
        """Store a user's message and queue its ``message`` update."""
        user = self._state.user(user_id)
        chat = self._state.chat(user_id if chat_id is None else chat_id)
        self._check_access(user, chat)
        replied = None
        if reply_to is not None:
            replied = chat.messages.get(reply_to if isinstance(reply_to, int) else reply_to["message_id"])
            if replied is None:
                raise SandboxError(f"message to reply to does not exist in chat {chat.id}")
            if thread_id is None and chat.is_forum:
                thread_id = replied.get("message_thread_id")
        if thread_id is not None:
            topic = chat.topic(thread_id) if chat.is_forum else None
            if topic is None:
                raise SandboxError(f"chat {chat.id} has no topic {thread_id}")
            if topic.is_closed and chat.members.get(user.id) not in ("creator", "administrator"):
                raise SandboxError(f"topic {thread_id} is closed")
        user.started = user.started or chat.user is user
        message = self._state.add_message(chat, user.to_dict(), content, thread_id=thread_id, reply_to=replied)
        self._core.updates.push("message", wire(message), chat.id)
        return message

    def _media_content(self, user: User, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        if kind == "location":
            return {"location": {"latitude": float(fields["latitude"]), "longitude": float(fields["longitude"])}}
        if kind == "contact":
            contact = {"phone_number": fields["phone_number"], "first_name": fields.get("first_name") or user.first_name}
            if fields.get("last_name"):
                contact["last_name"] = fields["last_name"]
            if fields.get("contact_user_id") is not None:
                contact["user_id"] = fields["contact_user_id"]
            return {"contact": contact}
        if kind not in KINDS:
            raise SandboxError(f"unknown media kind {kind!r}")
        data = fields.pop("content", None)
        if data is None:
            data = f"sandbox {kind} from {user.id}".encode()
        stored = self.files.add(kind, data, file_name=fields.pop("file_name", None),
                                mime_type=fields.pop("mime_type", None), attributes=fields)
        return media_fields(kind, stored)

    def _push_my_chat_member(self, user: User, old: str, new: str) -> None:
        chat = self._state.chats[user.id]

        def member(status: str) -> dict[str, Any]:
            data: dict[str, Any] = {"status": status, "user": self._state.bot_dict}
            if status == "kicked":
                data["until_date"] = 0
            return data

        self._core.updates.push("my_chat_member", {
            "chat": chat.to_dict(), "from": user.to_dict(), "date": int(time.time()),
            "old_chat_member": member(old), "new_chat_member": member(new),
        }, chat.id)

    def _change_membership(self, chat: Chat, user: User, status: str, service: dict[str, Any]) -> Message:
        old = self._state.chat_member(chat, user)
        chat.members[user.id] = status
        new = self._state.chat_member(chat, user)
        message = self._state.add_message(chat, user.to_dict(), service)
        self._core.updates.push("message", wire(message), chat.id)
        self._core.updates.push("chat_member", {
            "chat": chat.to_dict(), "from": user.to_dict(), "date": message["date"],
            "old_chat_member": old, "new_chat_member": new,
        }, chat.id)
        return message

    def _dump(self, chat_id: int) -> str:
        """A readable account of a chat and the recent failed calls to it (for assertion messages)."""
        lines = [f"chat {chat_id} messages:"]
        for message in list(self._state.chat(chat_id).messages.values())[-20:]:
            sender = "bot" if message["from"]["id"] == self._state.bot.id else message["from"]["id"]
            kind = next((key for key in ("text", "caption") if key in message), None)
            body = repr(message[kind][:120]) if kind else ",".join(k for k in message if k not in _ENVELOPE_KEYS)
            thread = f" thread={message['message_thread_id']}" if "message_thread_id" in message else ""
            lines.append(f"  #{message['message_id']}{thread} {sender}: {body}")
        failed = [c for c in self._core.calls if not c.ok and c.chat_id == chat_id][-10:]
        if failed:
            lines.append("failed calls:")
            lines.extend(f"  {c.method}: {c.error_code} {c.description}" for c in failed)
        return "\n".join(lines)

