"""Sandbox state: users, chats, forum topics and messages.

Messages are stored as Bot API ``Message`` dicts, keyed by ``message_id`` in
each chat (insertion-ordered, so listing keeps order and lookups/deletes are
O(1)).  The stored dict is exactly what the wire carries, except that a reply
keyboard / ``remove_keyboard`` markup is kept on it for assertions while
:func:`wire` leaves it out (a Bot API Message only carries inline keyboards).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import SandboxError, bad_request, forbidden
from .keyboards import is_inline
from .signals import Notifier

Message = dict[str, Any]

CONTENT_KEYS = (
    "text", "photo", "document", "video", "voice", "audio", "animation", "video_note", "sticker",
    "location", "contact", "venue", "poll", "dice",
)
TOPIC_COLORS = (7322096, 16766590, 13338331, 9367192, 16749490, 16478047)
_ADMIN_RIGHTS = {
    "can_be_edited": False, "is_anonymous": False, "can_manage_chat": True, "can_delete_messages": True,
    "can_manage_video_chats": True, "can_restrict_members": True, "can_promote_members": False,
    "can_change_info": True, "can_invite_users": True, "can_post_stories": False, "can_edit_stories": False,
    "can_delete_stories": False, "can_send_welcome_messages": False, "can_pin_messages": True,
}


def wire(message: Message) -> Message:
    """The message as the Bot API returns it (only inline keyboards travel)."""
    markup = message.get("reply_markup")
    if markup is None or is_inline(markup):
        return message
    return {key: value for key, value in message.items() if key != "reply_markup"}


def snapshot(message: Message) -> Message:
    """``message`` as embedded in another one (``reply_to_message``, ``callback_query.message``)."""
    return {key: value for key, value in wire(message).items() if key != "reply_to_message"}


def is_service(message: Message) -> bool:
    """Whether ``message`` is a service message (topic created, member joined, ...)."""
    return not any(key in message for key in CONTENT_KEYS)


@dataclass(slots=True)
class User:
    """A Telegram account and its relationship with the bot."""

    id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = None
    is_bot: bool = False
    started: bool = False  # has written to the bot, so the bot may write back
    blocked: bool = False
    deactivated: bool = False
    photos: list[list[dict[str, Any]]] = field(default_factory=list)  # profile photos (PhotoSize lists), newest first

    def to_dict(self) -> dict[str, Any]:
        """Bot API ``User``."""
        data: dict[str, Any] = {"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name}
        for key in ("last_name", "username", "language_code"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        return data


@dataclass(slots=True)
class Topic:
    """A forum topic."""

    message_thread_id: int
    name: str
    icon_color: int
    icon_custom_emoji_id: str | None = None
    is_closed: bool = False

    def to_api(self) -> dict[str, Any]:
        """Bot API ``ForumTopic``."""
        data: dict[str, Any] = {"message_thread_id": self.message_thread_id, "name": self.name,
                                "icon_color": self.icon_color}
        if self.icon_custom_emoji_id:
            data["icon_custom_emoji_id"] = self.icon_custom_emoji_id
        return data

    def to_dict(self) -> dict[str, Any]:
        """``ForumTopic`` plus the sandbox's ``is_closed`` flag."""
        return {**self.to_api(), "is_closed": self.is_closed}


@dataclass(eq=False)
class Chat:
    """A private chat with one user, or a (super)group."""

    id: int
    type: str
    title: str | None = None
    is_forum: bool = False
    user: User | None = None
    members: dict[int, str] = field(default_factory=dict)  # user id → chat member status
    bot_admin: bool = False
    can_manage_topics: bool = False
    messages: dict[int, Message] = field(default_factory=dict)
    topics: dict[int, Topic] = field(default_factory=dict)
    reply_keyboard: dict[str, Any] | None = None  # what the user's keyboard currently shows
    changed: Notifier = field(default_factory=Notifier)
    _next_message_id: int = 1
    _wire: dict[str, Any] | None = None

    @property
    def is_group(self) -> bool:
        """Whether this is a group or supergroup."""
        return self.type != "private"

    def to_dict(self) -> dict[str, Any]:
        """Bot API ``Chat`` (cached: it is embedded in every message)."""
        if self._wire is None:
            if self.user is not None:
                data = {key: value for key, value in self.user.to_dict().items()
                        if key in ("id", "first_name", "last_name", "username")}
                data["type"] = "private"
            else:
                data = {"id": self.id, "type": self.type, "title": self.title}
                if self.is_forum:
                    data["is_forum"] = True
            self._wire = data
        return self._wire

    def next_message_id(self) -> int:
        """Allocate the next message id of this chat."""
        message_id = self._next_message_id
        self._next_message_id += 1
        return message_id

    def topic(self, thread_id: int) -> Topic | None:
        """An existing topic of this forum."""
        return self.topics.get(thread_id)


class State:
    """All users and chats, plus the operations shared by API methods and user actions."""

    def __init__(self, bot: User) -> None:
        self.bot = bot
        self.bot_dict = bot.to_dict()
        self.users: dict[int, User] = {}
        self.chats: dict[int, Chat] = {}

    # -- registry ----------------------------------------------------------------

    def add_user(self, user: User) -> None:
        """Register ``user`` and their (not yet started) private chat with the bot."""
        if user.id in self.users or user.id in self.chats or user.id == self.bot.id:
            raise SandboxError(f"id {user.id} is already taken")
        self.users[user.id] = user
        self.chats[user.id] = Chat(user.id, "private", user=user)

    def add_group(self, chat: Chat) -> None:
        """Register a group chat."""
        if chat.id in self.chats:
            raise SandboxError(f"chat {chat.id} already exists")
        self.chats[chat.id] = chat

    def user(self, user_id: int) -> User:
        """A user added by the test."""
        user = self.users.get(user_id)
        if user is None:
            raise SandboxError(f"unknown user {user_id}; call add_user() first")
        return user

    def chat(self, chat_id: int) -> Chat:
        """A chat known to the sandbox (for the control surface)."""
        chat = self.chats.get(chat_id)
        if chat is None:
            raise SandboxError(f"unknown chat {chat_id}")
        return chat

    # -- Bot API access rules ------------------------------------------------------

    def visible_chat(self, chat_id: int | str) -> Chat:
        """A chat the bot can see: groups, and private chats of users who started the bot."""
        chat = self.chats.get(chat_id) if isinstance(chat_id, int) else None
        if chat is None or (chat.user is not None and not chat.user.started):
            raise bad_request("chat not found")
        return chat

    def writable_chat(self, chat_id: int | str) -> Chat:
        """A chat the bot may send to, with Telegram's 400/403 answers otherwise."""
        chat = self.chats.get(chat_id) if isinstance(chat_id, int) else None
        if chat is None:
            raise bad_request("chat not found")
        user = chat.user
        if user is not None:
            if user.deactivated:
                raise forbidden("user is deactivated")
            if user.blocked:
                raise forbidden("bot was blocked by the user")
            if not user.started:
                raise forbidden("bot can't initiate conversation with a user")
        return chat

    def member_status(self, chat: Chat, user_id: int) -> str:
        """Chat member status of ``user_id`` in ``chat``."""
        if user_id == self.bot.id:
            return "administrator" if chat.bot_admin else "member"
        if chat.user is not None:
            return "member" if user_id == chat.user.id else "left"
        return chat.members.get(user_id, "left")

    def chat_member(self, chat: Chat, user: User) -> dict[str, Any]:
        """Bot API ``ChatMember`` of ``user`` in ``chat``."""
        status = self.member_status(chat, user.id)
        data: dict[str, Any] = {"status": status, "user": user.to_dict()}
        if status == "creator":
            data["is_anonymous"] = False
        elif status == "administrator":
            data.update(_ADMIN_RIGHTS, can_manage_topics=chat.can_manage_topics if user.is_bot else True)
        elif status == "kicked":
            data["until_date"] = 0
        return data

    def administrators(self, chat: Chat) -> Iterator[User]:
        """Owner and administrators of a group, the bot included when it is one."""
        for user_id, status in chat.members.items():
            if status in ("creator", "administrator"):
                yield self.users[user_id]
        if chat.bot_admin:
            yield self.bot

    # -- messages ------------------------------------------------------------------

    def add_message(
        self,
        chat: Chat,
        sender: dict[str, Any],
        content: dict[str, Any],
        *,
        thread_id: int | None = None,
        reply_to: Message | None = None,
        reply_markup: dict[str, Any] | None = None,
        message_id: int | None = None,
    ) -> Message:
        """Store a new message in ``chat`` and wake whoever waits on that chat.

        Messages in a forum topic carry ``message_thread_id``/``is_topic_message``
        and, when they reply to nothing else, reply to the topic's creation
        message — as Telegram does.
        """
        message: Message = {
            "message_id": message_id if message_id is not None else chat.next_message_id(),
            "from": sender,
            "chat": chat.to_dict(),
            "date": int(time.time()),
        }
        if thread_id is not None:
            message["message_thread_id"] = thread_id
            message["is_topic_message"] = True
            if reply_to is None and thread_id != message["message_id"]:
                reply_to = chat.messages.get(thread_id)
        if reply_to is not None:
            message["reply_to_message"] = snapshot(reply_to)
        message.update(content)
        if reply_markup is not None:
            message["reply_markup"] = reply_markup
            if not is_inline(reply_markup):
                chat.reply_keyboard = None if reply_markup.get("remove_keyboard") else reply_markup
        chat.messages[message["message_id"]] = message
        chat.changed.notify()
        return message

    def update_message(self, chat: Chat, message: Message, changes: dict[str, Any],
                       removed: Iterable[str] = ()) -> Message:
        """Apply an edit in place (stamping ``edit_date``) and wake waiters."""
        for key in removed:
            message.pop(key, None)
        message.update(changes)
        message["edit_date"] = int(time.time())
        chat.changed.notify()
        return message

    def delete_message(self, chat: Chat, message_id: int) -> None:
        """Remove a message."""
        del chat.messages[message_id]
        chat.changed.notify()

    def create_topic(self, chat: Chat, name: str, icon_color: int, icon_custom_emoji_id: str | None) -> Topic:
        """Create a forum topic and its ``forum_topic_created`` service message."""
        topic = Topic(chat.next_message_id(), name, icon_color, icon_custom_emoji_id)
        chat.topics[topic.message_thread_id] = topic
        created: dict[str, Any] = {"name": name, "icon_color": icon_color}
        if icon_custom_emoji_id:
            created["icon_custom_emoji_id"] = icon_custom_emoji_id
        self.add_message(chat, self.bot_dict, {"forum_topic_created": created},
                         thread_id=topic.message_thread_id, message_id=topic.message_thread_id)
        return topic

    def delete_topic(self, chat: Chat, topic: Topic) -> None:
        """Remove a topic and every message in it."""
        del chat.topics[topic.message_thread_id]
        thread_id = topic.message_thread_id
        chat.messages = {key: m for key, m in chat.messages.items() if m.get("message_thread_id") != thread_id}
        chat.changed.notify()
