"""Building outgoing messages: text and captions, files, destination, markup, flood control."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core import Core
from ..errors import RateLimited, bad_request
from ..files import MAX_PHOTO_SIZE, StoredFile
from ..formatting import Entity, detect_entities, trim, utf16_len, validate_entities
from ..html_parser import parse_html
from ..keyboards import validate_reply_markup
from ..markdown import parse_markdown_v2
from ..params import Params, Upload
from ..state import Chat, Message

TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
_INT_ATTRIBUTES = ("duration", "width", "height", "length")
_STR_ATTRIBUTES = ("performer", "title", "emoji")
_GENERIC_MIME = {"application/octet-stream", ""}


def render(text: str, parse_mode: str | None, entities: Any, *, strict_html: bool) -> tuple[str, list[Entity]]:
    """Text and entities as Telegram stores them: parsed, trimmed, with detected entities.

    Like the Bot API server, a ``parse_mode`` wins over explicit ``entities``.
    """
    mode = (parse_mode or "").lower()
    if mode == "html":
        text, parsed = parse_html(text, strict=strict_html)
    elif mode == "markdownv2":
        text, parsed = parse_markdown_v2(text)
    elif mode == "markdown":
        raise bad_request("can't parse entities: legacy Markdown is not supported by the sandbox, "
                          "use HTML or MarkdownV2")
    elif mode not in ("", "none"):
        raise bad_request("unsupported parse_mode")
    else:
        parsed = validate_entities(entities, text) if entities else []
    text, parsed = trim(text, parsed)
    return text, detect_entities(text, parsed)


@dataclass(slots=True)
class Target:
    """Where a message goes."""

    chat: Chat
    thread_id: int | None
    reply_to: Message | None


class Composer:
    """Helpers shared by every method that creates messages."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.state = core.state

    # -- text ----------------------------------------------------------------------

    def text(self, p: Params) -> dict[str, Any]:
        """``text``/``entities`` content of sendMessage / editMessageText."""
        return self.text_content(p.text("text"), p.text("parse_mode"), p.json("entities"))

    def text_content(self, raw: str | None, parse_mode: str | None, entities: Any) -> dict[str, Any]:
        """Render message text, enforcing Telegram's emptiness and length rules."""
        if not raw:
            raise bad_request("message text is empty")
        text, parsed = render(raw, parse_mode, entities, strict_html=self.core.strict_html)
        if not text:
            raise bad_request("message text is empty")
        if utf16_len(text) > TEXT_LIMIT:
            raise bad_request("message is too long")
        content: dict[str, Any] = {"text": text}
        if parsed:
            content["entities"] = parsed
        return content

    def caption(self, p: Params) -> dict[str, Any]:
        """``caption``/``caption_entities`` content from the call's parameters."""
        return self.caption_content(p.text("caption"), p.text("parse_mode"), p.json("caption_entities"))

    def caption_content(self, raw: str | None, parse_mode: str | None, entities: Any) -> dict[str, Any]:
        """Render a caption (empty → no caption), enforcing the 1024-character limit."""
        if not raw:
            return {}
        text, parsed = render(raw, parse_mode, entities, strict_html=self.core.strict_html)
        if utf16_len(text) > CAPTION_LIMIT:
            raise bad_request("message caption is too long")
        if not text:
            return {}
        content: dict[str, Any] = {"caption": text}
        if parsed:
            content["caption_entities"] = parsed
        return content

    # -- files ---------------------------------------------------------------------

    def file(self, p: Params, kind: str, field: str | None = None) -> StoredFile:
        """The file sent as ``field`` (default: the kind's own field)."""
        field = field or kind
        reference = p.file(field)
        if reference is None:
            raise bad_request(f"there is no {field} in the request")
        return self.resolve_file(reference, kind, self.attributes(p.values))

    def resolve_file(self, reference: Upload | str, kind: str, attributes: dict[str, Any]) -> StoredFile:
        """Store an upload or URL, or look up a file_id (which must be of the same kind)."""
        files = self.core.files
        if isinstance(reference, Upload):
            if not reference.data:
                raise bad_request("file must be non-empty")
            if kind == "photo" and len(reference.data) > MAX_PHOTO_SIZE:
                raise bad_request("PHOTO_SAVE_FILE_INVALID")
            mime_type = None if (reference.content_type or "") in _GENERIC_MIME else reference.content_type
            return files.add(kind, reference.data, file_name=reference.filename, mime_type=mime_type,
                             attributes=attributes)
        if reference.startswith(("http://", "https://")):
            return files.add(kind, url=reference, attributes=attributes)
        stored = files.record(reference)
        if stored is None:
            raise bad_request("wrong file identifier/HTTP URL specified")
        if stored.kind != kind:
            raise bad_request("type of file mismatch")
        return stored

    @staticmethod
    def attributes(values: dict[str, Any]) -> dict[str, Any]:
        """Media attributes a sender may set (duration, width, performer, ...)."""
        found: dict[str, Any] = {}
        for key in _INT_ATTRIBUTES:
            if values.get(key) not in (None, ""):
                try:
                    found[key] = int(values[key])
                except (TypeError, ValueError):
                    raise bad_request(f"invalid {key} specified") from None
        for key in _STR_ATTRIBUTES:
            if values.get(key):
                found[key] = str(values[key])
        return found

    # -- destination, markup, flood control ------------------------------------------

    def target(self, p: Params) -> Target:
        """Resolve ``chat_id``, ``message_thread_id`` and the message replied to."""
        chat = self.state.writable_chat(p.chat_id())
        thread_id = p.integer("message_thread_id") if chat.is_group else None
        reply_to = self._reply_to(p, chat)
        if thread_id is None and reply_to is not None and chat.is_forum:
            thread_id = reply_to.get("message_thread_id")  # a reply lands in the replied message's topic
        if thread_id is not None:
            self.check_thread(chat, thread_id)
        return Target(chat, thread_id, reply_to)

    def check_thread(self, chat: Chat, thread_id: int) -> None:
        """The bot may post into topic ``thread_id`` of ``chat``."""
        topic = chat.topic(thread_id) if chat.is_forum else None
        if topic is None:
            raise bad_request("message thread not found")
        if topic.is_closed and not (chat.bot_admin and chat.can_manage_topics):
            raise bad_request("TOPIC_CLOSED")

    def _reply_to(self, p: Params, chat: Chat) -> Message | None:
        parameters = p.json("reply_parameters")
        if isinstance(parameters, dict):
            message_id = parameters.get("message_id")
            lenient = bool(parameters.get("allow_sending_without_reply"))
            other_chat = parameters.get("chat_id")
            if other_chat is not None and str(other_chat) != str(chat.id):
                raise bad_request("message to be replied not found")  # cross-chat replies are not modelled
        else:
            message_id = p.integer("reply_to_message_id")
            lenient = p.flag("allow_sending_without_reply")
        if message_id is None:
            return None
        message = chat.messages.get(int(message_id))
        if message is None and not lenient:
            raise bad_request("message to be replied not found")
        return message

    @staticmethod
    def markup(p: Params) -> dict[str, Any] | None:
        """The validated ``reply_markup``, if any."""
        raw = p.json("reply_markup")
        return None if raw is None else validate_reply_markup(raw)

    def throttle(self, p: Params, chat: Chat, count: int = 1) -> None:
        """Apply flood limits to ``count`` new messages in ``chat``."""
        refused = self.core.limiter.admit(chat.id, is_group=chat.is_group, paid=p.flag("allow_paid_broadcast"),
                                          count=count)
        if refused is not None:
            raise RateLimited(refused.retry_after, refused.scope)

    def deliver(self, p: Params, target: Target, content: dict[str, Any],
                markup: dict[str, Any] | None = None) -> Message:
        """Store a message sent by the bot."""
        if p.flag("protect_content"):
            content["has_protected_content"] = True
        return self.state.add_message(target.chat, self.state.bot_dict, content, thread_id=target.thread_id,
                                      reply_to=target.reply_to, reply_markup=markup)
