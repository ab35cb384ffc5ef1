"""The bot, chats, members, commands and forum topics."""

from __future__ import annotations

import json
import re
from typing import Any

from ..errors import RateLimited, bad_request
from ..params import Params
from ..state import TOPIC_COLORS, Chat, Topic
from .base import MethodGroup, api_method

_COMMAND = re.compile(r"^[a-z0-9_]{1,32}$")
_NO_GIFTS = {"unlimited_gifts": False, "limited_gifts": False, "unique_gifts": False,
             "premium_subscription": False, "gifts_from_channels": False}


def _scope_key(p: Params) -> tuple[str, str]:
    scope = p.json("scope") or {"type": "default"}
    return json.dumps(scope, sort_keys=True), p.text("language_code") or ""


class ChatMethods(MethodGroup):
    """getMe, getChat*, *MyCommands and forum topic management."""

    @api_method("getMe")
    async def get_me(self, p: Params) -> dict[str, Any]:
        return {**self.state.bot_dict, "can_join_groups": True, "can_read_all_group_messages": False,
                "supports_inline_queries": False, "can_connect_to_business": False, "has_main_web_app": False}

    @api_method("getChat")
    async def get_chat(self, p: Params) -> dict[str, Any]:
        chat = self.state.visible_chat(p.chat_id())
        info = {**chat.to_dict(), "accent_color_id": 0, "max_reaction_count": 11,
                "accepted_gift_types": dict(_NO_GIFTS)}
        if chat.is_group:
            info["permissions"] = {"can_send_messages": True, "can_send_other_messages": True}
        return info

    def _user(self, p: Params) -> Any:
        user_id = p.integer("user_id", required=True)
        if user_id == self.state.bot.id:
            return self.state.bot
        user = self.state.users.get(user_id)
        if user is None:
            raise bad_request("user not found")
        return user

    @api_method("getUserProfilePhotos")
    async def get_user_profile_photos(self, p: Params) -> dict[str, Any]:
        photos = self._user(p).photos
        offset, limit = p.integer("offset") or 0, p.integer("limit") or 100
        if not 1 <= limit <= 100:
            raise bad_request("limit must be between 1 and 100")
        return {"total_count": len(photos), "photos": photos[offset:offset + limit]}

    @api_method("getChatMember")
    async def get_chat_member(self, p: Params) -> dict[str, Any]:
        chat = self.state.visible_chat(p.chat_id())
        return self.state.chat_member(chat, self._user(p))

    @api_method("getChatAdministrators")
    async def get_chat_administrators(self, p: Params) -> list[dict[str, Any]]:
        chat = self.state.visible_chat(p.chat_id())
        if not chat.is_group:
            raise bad_request("there are no administrators in the private chat")
        return [self.state.chat_member(chat, user) for user in self.state.administrators(chat)]

    @api_method("setMyCommands")
    async def set_my_commands(self, p: Params) -> bool:
        commands = p.json("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise bad_request("can't parse commands JSON object")
        for command in commands:
            if not isinstance(command, dict) or not _COMMAND.match(str(command.get("command", ""))):
                raise bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", "")).strip()) <= 256:
                raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        key = _scope_key(p)
        if commands:
            self.core.commands[key] = [{"command": c["command"], "description": c["description"]} for c in commands]
        else:
            self.core.commands.pop(key, None)
        return True

    @api_method("deleteMyCommands")
    async def delete_my_commands(self, p: Params) -> bool:
        self.core.commands.pop(_scope_key(p), None)
        return True

    @api_method("getMyCommands")
    async def get_my_commands(self, p: Params) -> list[dict[str, Any]]:
        return self.core.commands.get(_scope_key(p), [])

    # -- forum topics ---------------------------------------------------------------

    def _forum(self, p: Params) -> Chat:
        chat = self.state.visible_chat(p.chat_id())
        if not chat.is_forum:
            raise bad_request("the chat is not a forum")
        return chat

    def _topic(self, p: Params) -> tuple[Chat, Topic]:
        chat = self._forum(p)
        topic = chat.topic(p.integer("message_thread_id", required=True))
        if topic is None:
            raise bad_request("TOPIC_ID_INVALID")
        return chat, topic

    def _service(self, chat: Chat, topic: Topic, content: dict[str, Any]) -> None:
        self.state.add_message(chat, self.state.bot_dict, content, thread_id=topic.message_thread_id)

    @staticmethod
    def _name(p: Params) -> str:
        name = p.text("name") or ""
        if not 1 <= len(name) <= 128:
            raise bad_request("TOPIC_NAME_INVALID")
        return name

    @api_method("createForumTopic")
    async def create_forum_topic(self, p: Params) -> dict[str, Any]:
        chat = self._forum(p)
        if not (chat.bot_admin and chat.can_manage_topics):
            raise bad_request("not enough rights to create a topic")
        name = self._name(p)
        color = p.integer("icon_color", TOPIC_COLORS[0])
        if color not in TOPIC_COLORS:
            raise bad_request("TOPIC_COLOR_INVALID")
        refused = self.core.limiter.admit_topic(chat.id)
        if refused is not None:
            raise RateLimited(refused.retry_after, refused.scope)
        return self.state.create_topic(chat, name, color, p.text("icon_custom_emoji_id")).to_api()

    @api_method("editForumTopic")
    async def edit_forum_topic(self, p: Params) -> bool:
        chat, topic = self._topic(p)
        edited: dict[str, Any] = {}
        if p.has("name"):
            topic.name = edited["name"] = self._name(p)
        if p.has("icon_custom_emoji_id"):
            topic.icon_custom_emoji_id = p.text("icon_custom_emoji_id") or None
            edited["icon_custom_emoji_id"] = p.text("icon_custom_emoji_id") or ""
        if not edited:
            raise bad_request("TOPIC_NOT_MODIFIED")
        self._service(chat, topic, {"forum_topic_edited": edited})
        return True

    def _set_closed(self, p: Params, closed: bool) -> bool:
        chat, topic = self._topic(p)
        if topic.is_closed == closed:
            raise bad_request("TOPIC_NOT_MODIFIED")
        topic.is_closed = closed
        self._service(chat, topic, {"forum_topic_closed" if closed else "forum_topic_reopened": {}})
        return True

    @api_method("closeForumTopic")
    async def close_forum_topic(self, p: Params) -> bool:
        return self._set_closed(p, True)

    @api_method("reopenForumTopic")
    async def reopen_forum_topic(self, p: Params) -> bool:
        return self._set_closed(p, False)

    @api_method("deleteForumTopic")
    async def delete_forum_topic(self, p: Params) -> bool:
        chat, topic = self._topic(p)
        if not chat.bot_admin:
            raise bad_request("CHAT_ADMIN_REQUIRED")
        self.state.delete_topic(chat, topic)
        return True
