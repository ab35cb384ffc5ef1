"""What a buyer sends, as plain values: who (:class:`Visitor`) and what (:class:`Inbound`).

Handlers build them from aiogram's objects; the services that hold the rules take only these,
so the rules can be exercised without Telegram.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiogram.types import Message, User


@dataclass(frozen=True)
class Visitor:
    """A Telegram user as the journey knows them."""

    tg_user_id: int
    first_name: str = ""
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = None

    @classmethod
    def of(cls, user: User) -> Visitor:
        return cls(user.id, user.first_name, user.last_name, user.username, user.language_code)


@dataclass(frozen=True)
class Inbound:
    """One message from a buyer: enough to log it, answer it and copy it (chat and message id; an album's group)."""

    chat_id: int
    message_id: int
    content_type: str  # aiogram's ContentType value: "text", "photo", "contact"…
    text: str | None = None
    caption: str | None = None
    media_group_id: str | None = None
    reply_to_message_id: int | None = None
    contact_phone: str | None = None
    contact_user_id: int | None = None
    sent_at: float | None = None  # Unix time of the message in Telegram (whole seconds)
    attachment: dict[str, Any] = field(default_factory=dict, compare=False)  # see :func:`attachment`

    @classmethod
    def of(cls, message: Message) -> Inbound:
        contact = message.contact
        return cls(
            attachment=attachment(message),
            chat_id=message.chat.id, message_id=message.message_id, content_type=message.content_type.value,
            text=message.text, caption=message.caption, media_group_id=message.media_group_id,
            reply_to_message_id=message.reply_to_message.message_id if message.reply_to_message else None,
            contact_phone=contact.phone_number if contact else None, contact_user_id=contact.user_id if contact else None,
            sent_at=message.date.timestamp(),
        )


FILE_KINDS = ("document", "video", "voice", "audio", "animation", "video_note", "sticker")


def attachment(message: Message) -> dict[str, Any]:
    """What a message carries besides text, as plain values for the conversation log: ``{"file": {id, name, mime,
    size}}`` (the largest photo size), ``{"location": {lat, lon}}``, ``{"contact": {name, phone}}`` or ``{}``."""
    if message.photo:
        largest = message.photo[-1]
        return {"file": {"id": largest.file_id, "name": None, "mime": "image/jpeg", "size": largest.file_size}}
    for kind in FILE_KINDS:
        media = getattr(message, kind, None)
        if media is not None:
            mime = getattr(media, "mime_type", None) or ("image/webp" if kind == "sticker" else None)
            return {"file": {"id": media.file_id, "name": getattr(media, "file_name", None), "mime": mime, "size": media.file_size}}
    if message.location:
        return {"location": {"lat": message.location.latitude, "lon": message.location.longitude}}
    if message.contact:
        name = " ".join(part for part in (message.contact.first_name, message.contact.last_name) if part)
        return {"contact": {"name": name, "phone": message.contact.phone_number}}
    return {}
