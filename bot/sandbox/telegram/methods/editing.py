"""Changing what was sent: edits, deletions, callback query answers."""

from __future__ import annotations

from typing import Any

from ..core import Core
from ..errors import bad_request
from ..files import media_fields
from ..params import Params
from ..state import CONTENT_KEYS, Chat, Message, wire
from .base import MethodGroup, api_method
from .compose import Composer

NOT_MODIFIED = ("message is not modified: specified new message content and reply markup are exactly the same "
                "as a current content and reply markup of the message")
_MEDIA_KEYS = ("photo", "video", "animation", "document", "audio")
_CAPTION_KEYS = ("caption", "caption_entities")
_TEXT_KEYS = ("text", "entities", "link_preview_options")
QUERY_INVALID = "query is too old and response timeout expired or query ID is invalid"


class EditingMethods(MethodGroup):
    """editMessage*, deleteMessage and answerCallbackQuery."""

    def __init__(self, core: Core) -> None:
        super().__init__(core)
        self.compose = Composer(core)

    def _editable(self, p: Params) -> tuple[Chat, Message]:
        if p.has("inline_message_id"):
            raise bad_request("MESSAGE_ID_INVALID")
        chat = self.state.writable_chat(p.chat_id())
        message = chat.messages.get(p.integer("message_id", required=True))
        if message is None:
            raise bad_request("message to edit not found")
        if message["from"]["id"] != self.state.bot.id:
            raise bad_request("message can't be edited")
        return chat, message

    def _apply(self, chat: Chat, message: Message, keys: tuple[str, ...], content: dict[str, Any],
               markup: dict[str, Any] | None) -> Message:
        """Replace the ``keys`` part of ``message`` by ``content`` and the inline keyboard by ``markup``.

        Like Telegram, an edit without ``reply_markup`` removes the inline keyboard.
        """
        current = {key: message[key] for key in keys if key in message}
        if current == content and message.get("reply_markup") == markup:
            raise bad_request(NOT_MODIFIED)
        removed = [key for key in keys if key not in content]
        changes = dict(content)
        if markup is None:
            removed.append("reply_markup")
        else:
            changes["reply_markup"] = markup
        return wire(self.state.update_message(chat, message, changes, removed))

    @staticmethod
    def _inline_markup(p: Params) -> dict[str, Any] | None:
        markup = Composer.markup(p)
        if markup is not None and "inline_keyboard" not in markup:
            raise bad_request("inline keyboard expected")
        return markup

    @api_method("editMessageText")
    async def edit_message_text(self, p: Params) -> Message:
        chat, message = self._editable(p)
        if "text" not in message:
            raise bad_request("there is no text in the message to edit")
        content = self.compose.text(p)
        preview = p.json("link_preview_options")
        if isinstance(preview, dict) and preview:
            content["link_preview_options"] = preview
        return self._apply(chat, message, _TEXT_KEYS, content, self._inline_markup(p))

    @api_method("editMessageCaption")
    async def edit_message_caption(self, p: Params) -> Message:
        chat, message = self._editable(p)
        if not any(key in message for key in _MEDIA_KEYS + ("voice",)):
            raise bad_request("there is no caption in the message to edit")
        content = self.compose.caption(p)
        return self._apply(chat, message, _CAPTION_KEYS, content, self._inline_markup(p))

    @api_method("editMessageReplyMarkup")
    async def edit_message_reply_markup(self, p: Params) -> Message:
        chat, message = self._editable(p)
        return self._apply(chat, message, (), {}, self._inline_markup(p))

    @api_method("editMessageMedia")
    async def edit_message_media(self, p: Params) -> Message:
        chat, message = self._editable(p)
        if not any(key in message for key in _MEDIA_KEYS):
            raise bad_request("there is no media in the message to edit")
        media = p.json("media")
        if not isinstance(media, dict) or media.get("type") not in _MEDIA_KEYS:
            raise bad_request("can't parse InputMedia JSON object")
        stored = self.compose.resolve_file(p.attachment(media.get("media")), media["type"],
                                           self.compose.attributes(media))
        content = media_fields(media["type"], stored)
        content.update(self.compose.caption_content(media.get("caption"), media.get("parse_mode"),
                                                    media.get("caption_entities")))
        keys = tuple(key for key in CONTENT_KEYS if key != "text") + _CAPTION_KEYS
        return self._apply(chat, message, keys, content, self._inline_markup(p))

    @api_method("deleteMessage")
    async def delete_message(self, p: Params) -> bool:
        chat = self.state.visible_chat(p.chat_id())
        message_id = p.integer("message_id", required=True)
        message = chat.messages.get(message_id)
        if message is None:
            raise bad_request("message to delete not found")
        own = message["from"]["id"] == self.state.bot.id
        if "forum_topic_created" in message or (chat.is_group and not own and not chat.bot_admin):
            raise bad_request("message can't be deleted")
        self.state.delete_message(chat, message_id)
        return True

    @api_method("answerCallbackQuery")
    async def answer_callback_query(self, p: Params) -> bool:
        query_id = p.text("callback_query_id")
        query = self.core.callback_queries.pop(query_id or "", None)
        if query is None:
            raise bad_request(QUERY_INVALID)
        text = p.text("text")
        if text is not None and len(text) > 200:
            self.core.callback_queries[query["id"]] = query
            raise bad_request("MESSAGE_TOO_LONG")
        message = query.get("message") or {}
        self.core.callback_answers.append({
            "callback_query_id": query["id"],
            "user_id": query["from"]["id"],
            "chat_id": message.get("chat", {}).get("id"),
            "message_id": message.get("message_id"),
            "data": query.get("data"),
            "text": text,
            "show_alert": p.flag("show_alert"),
            "url": p.text("url"),
            "cache_time": p.integer("cache_time", 0),
        })
        return True
