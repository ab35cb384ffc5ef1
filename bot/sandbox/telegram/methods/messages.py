"""Sending messages: sendMessage, files, albums, locations, contacts, chat actions,
copies and forwards."""

from __future__ import annotations

import itertools
from typing import Any

from ..core import Core
from ..errors import bad_request
from ..files import media_fields
from ..params import Params
from ..state import Chat, Message, is_service, wire
from .base import MethodGroup, api_method
from .compose import Composer, Target

CHAT_ACTIONS = frozenset({
    "typing", "upload_photo", "record_video", "upload_video", "record_voice", "upload_voice",
    "upload_document", "choose_sticker", "find_location", "record_video_note", "upload_video_note",
})
ALBUM_KINDS = frozenset({"photo", "video", "document", "audio"})
# Message fields that make up its content (what a copy reproduces).
COPIED_KEYS = (
    "text", "entities", "link_preview_options", "photo", "document", "video", "voice", "audio", "animation",
    "video_note", "sticker", "location", "contact", "venue", "poll", "dice", "caption", "caption_entities",
    "has_media_spoiler", "show_caption_above_media",
)
_CAPTIONLESS = {"sticker", "video_note"}
_media_group_ids = itertools.count(13_000_000_000_000_000)


def new_media_group_id() -> str:
    """A fresh ``media_group_id``."""
    return str(next(_media_group_ids))


class MessageMethods(MethodGroup):
    """send*, copy*, forward* and sendChatAction."""

    def __init__(self, core: Core) -> None:
        super().__init__(core)
        self.compose = Composer(core)

    @api_method("sendMessage")
    async def send_message(self, p: Params) -> Message:
        target = self.compose.target(p)
        content = self.compose.text(p)
        preview = p.json("link_preview_options")
        if isinstance(preview, dict) and preview:
            content["link_preview_options"] = preview
        elif p.flag("disable_web_page_preview"):
            content["link_preview_options"] = {"is_disabled": True}
        return self._send(p, target, content)

    def _send(self, p: Params, target: Target, content: dict[str, Any]) -> Message:
        markup = self.compose.markup(p)
        self.compose.throttle(p, target.chat)
        return wire(self.compose.deliver(p, target, content, markup))

    def _send_file(self, p: Params, kind: str) -> Message:
        target = self.compose.target(p)
        stored = self.compose.file(p, kind)
        content = media_fields(kind, stored)
        if kind not in _CAPTIONLESS:
            content.update(self.compose.caption(p))
        if p.flag("has_spoiler"):
            content["has_media_spoiler"] = True
        if p.flag("show_caption_above_media"):
            content["show_caption_above_media"] = True
        return self._send(p, target, content)

    @api_method("sendPhoto")
    async def send_photo(self, p: Params) -> Message:
        return self._send_file(p, "photo")

    @api_method("sendDocument")
    async def send_document(self, p: Params) -> Message:
        return self._send_file(p, "document")

    @api_method("sendVideo")
    async def send_video(self, p: Params) -> Message:
        return self._send_file(p, "video")

    @api_method("sendVoice")
    async def send_voice(self, p: Params) -> Message:
        return self._send_file(p, "voice")

    @api_method("sendAudio")
    async def send_audio(self, p: Params) -> Message:
        return self._send_file(p, "audio")

    @api_method("sendAnimation")
    async def send_animation(self, p: Params) -> Message:
        return self._send_file(p, "animation")

    @api_method("sendVideoNote")
    async def send_video_note(self, p: Params) -> Message:
        return self._send_file(p, "video_note")

    @api_method("sendSticker")
    async def send_sticker(self, p: Params) -> Message:
        return self._send_file(p, "sticker")

    @api_method("sendLocation")
    async def send_location(self, p: Params) -> Message:
        target = self.compose.target(p)
        location: dict[str, Any] = {"latitude": p.number("latitude", required=True),
                                    "longitude": p.number("longitude", required=True)}
        for key in ("horizontal_accuracy", "live_period", "heading", "proximity_alert_radius"):
            if p.has(key):
                location[key] = p.number(key)
        return self._send(p, target, {"location": location})

    @api_method("sendContact")
    async def send_contact(self, p: Params) -> Message:
        target = self.compose.target(p)
        contact = {"phone_number": p.text("phone_number"), "first_name": p.text("first_name")}
        for key in ("phone_number", "first_name"):
            if not contact[key]:
                raise bad_request(f"{key} is empty")
        for key in ("last_name", "vcard"):
            if p.text(key):
                contact[key] = p.text(key)
        return self._send(p, target, {"contact": contact})

    @api_method("sendMediaGroup")
    async def send_media_group(self, p: Params) -> list[Message]:
        target = self.compose.target(p)
        items = p.json("media")
        if not isinstance(items, list) or len(items) < 2:
            raise bad_request("wrong number of media")
        if len(items) > 10:
            raise bad_request("Too many messages to send as an album")
        kinds = {item.get("type") if isinstance(item, dict) else None for item in items}
        if not kinds <= ALBUM_KINDS:
            raise bad_request("can't parse InputMedia: unsupported media type")
        for alone in ("document", "audio"):
            if alone in kinds and len(kinds) > 1:
                raise bad_request(f"{alone.capitalize()} can't be mixed with other media types")
        contents = []
        for item in items:
            stored = self.compose.resolve_file(p.attachment(item.get("media")), item["type"],
                                               self.compose.attributes(item))
            content = media_fields(item["type"], stored)
            content.update(self.compose.caption_content(item.get("caption"), item.get("parse_mode"),
                                                        item.get("caption_entities")))
            if item.get("has_spoiler"):
                content["has_media_spoiler"] = True
            contents.append(content)
        self.compose.throttle(p, target.chat, len(contents))
        group_id = new_media_group_id()
        return [wire(self.compose.deliver(p, target, {**content, "media_group_id": group_id}))
                for content in contents]

    @api_method("sendChatAction")
    async def send_chat_action(self, p: Params) -> bool:
        chat = self.state.writable_chat(p.chat_id())
        if p.text("action") not in CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        thread_id = p.integer("message_thread_id")
        if thread_id is not None and chat.is_group:
            self.compose.check_thread(chat, thread_id)
        return True

    # -- copies and forwards --------------------------------------------------------

    def _source(self, p: Params, missing: str) -> tuple[Chat, Message]:
        chat = self.state.visible_chat(p.chat_id("from_chat_id"))
        message = chat.messages.get(p.integer("message_id", required=True))
        if message is None:
            raise bad_request(missing)
        return chat, message

    def _copy_content(self, p: Params, source: Message, *, caption: bool) -> dict[str, Any]:
        content = {key: source[key] for key in COPIED_KEYS if key in source}
        if "text" not in content:
            if p.flag("remove_caption"):
                content.pop("caption", None)
                content.pop("caption_entities", None)
            elif caption and p.has("caption"):
                content.pop("caption", None)
                content.pop("caption_entities", None)
                content.update(self.compose.caption(p))
        return content

    @staticmethod
    def _forward_content(source: Message) -> dict[str, Any]:
        content = {key: source[key] for key in COPIED_KEYS if key in source}
        content["forward_origin"] = {"type": "user", "sender_user": source["from"], "date": source["date"]}
        return content

    @api_method("copyMessage")
    async def copy_message(self, p: Params) -> dict[str, int]:
        target = self.compose.target(p)
        _, source = self._source(p, "message to copy not found")
        if is_service(source):
            raise bad_request("message can't be copied")
        content = self._copy_content(p, source, caption=True)
        return {"message_id": self._send(p, target, content)["message_id"]}

    @api_method("forwardMessage")
    async def forward_message(self, p: Params) -> Message:
        target = self.compose.target(p)
        _, source = self._source(p, "message to forward not found")
        if is_service(source):
            raise bad_request("message can't be forwarded")
        self.compose.throttle(p, target.chat)
        return wire(self.compose.deliver(p, target, self._forward_content(source)))

    def _batch(self, p: Params, missing: str) -> tuple[Target, list[Message]]:
        target = self.compose.target(p)
        source_chat = self.state.visible_chat(p.chat_id("from_chat_id"))
        ids = p.json("message_ids")
        if not isinstance(ids, list) or not 1 <= len(ids) <= 100:
            raise bad_request("message_ids must be a non-empty list of at most 100 identifiers")
        try:
            wanted = sorted({int(message_id) for message_id in ids})
        except (TypeError, ValueError):
            raise bad_request("can't parse message_ids JSON object") from None
        sources = [m for m in map(source_chat.messages.get, wanted) if m is not None and not is_service(m)]
        if not sources:
            raise bad_request(missing)
        self.compose.throttle(p, target.chat, len(sources))
        return target, sources

    def _deliver_batch(self, p: Params, target: Target, sources: list[Message],
                       contents: list[dict[str, Any]]) -> list[dict[str, int]]:
        groups: dict[str, str] = {}  # source media_group_id → new one
        result = []
        for source, content in zip(sources, contents):
            if "media_group_id" in source:
                content["media_group_id"] = groups.setdefault(source["media_group_id"], new_media_group_id())
            result.append({"message_id": self.compose.deliver(p, target, content)["message_id"]})
        return result

    @api_method("copyMessages")
    async def copy_messages(self, p: Params) -> list[dict[str, int]]:
        target, sources = self._batch(p, "message to copy not found")
        contents = [self._copy_content(p, source, caption=False) for source in sources]
        return self._deliver_batch(p, target, sources, contents)

    @api_method("forwardMessages")
    async def forward_messages(self, p: Params) -> list[dict[str, int]]:
        target, sources = self._batch(p, "message to forward not found")
        return self._deliver_batch(p, target, sources, [self._forward_content(s) for s in sources])
