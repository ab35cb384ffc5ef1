"""The Telegram conversation as an amoCRM chat (the Chats API): what goes into the outbox, and sending it.

Each message the journal logs becomes one ``chat`` outbox item (written in the message's transaction),
with the Telegram message id in its ``msgid``, so each reaches the chat once and in order: a buyer's as
incoming, the bot's and the managers' (greeting, catalogue, broadcasts, operator-chat replies) as outgoing
messages sent outside amoCRM (``silent``). Internal notes, edits and the replies that came from amoCRM are
not sent. Before a buyer's chat gets its first message it is created (name, username, phone, their Telegram
profile photo as the avatar) and linked to
the buyer's amoCRM contact (``POST /api/v4/contacts/chats``), so it shows on the lead the bot made, never as
an "unsorted" lead; a buyer without a contact gets one (with their name) linked to their lead. Each message
carries the buyer's profile as it is then (a phone shared later, a new name reach the chat with it). Media go by
URL: the service's own signed, expiring ``/media/…`` links (:mod:`bot.media`), never Telegram's.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.crm import channel, chats
from bot.crm.amojo import AmojoClient, ChannelRefused
from bot.crm.client import AmoClient, AmoRejected, AmoUnavailable
from bot.crm.models import CHAT, AmojoChat
from bot.crm.outbox import Job, Outcome
from bot.db.models import Lead, Message

if TYPE_CHECKING:
    from bot.media import MediaLinks

log = structlog.get_logger(__name__)

MESSAGE, STATUS = "message", "status"
SCOPE_TTL = 5.0  # seconds the connection read from the database is trusted
# Telegram content type → the Chats API's message type (files by URL)
FILE_TYPES = {"photo": "picture", "sticker": "sticker", "video": "video", "animation": "video", "video_note": "video",
              "voice": "voice", "audio": "file", "document": "file"}


def conversation_id(tg_user_id: int) -> str:
    return f"tg-{tg_user_id}"


def message_payload(lead: Lead, record: Message) -> dict[str, Any] | None:
    """The ``chat`` outbox item of a logged message, or None if it does not belong in the amoCRM chat."""
    meta = record.meta or {}
    if lead.tg_user_id is None or record.is_internal or "edit_of" in meta or meta.get("amojo_message_id"):
        return None
    conversation = conversation_id(lead.tg_user_id)
    msgid = f"{conversation}-{record.tg_message_id}" if record.tg_message_id else f"{conversation}-ob{record.id}"
    text = "/start" if (record.text or "").startswith("/start ") else record.text  # a start link's payload is not for managers
    return {"conversation": conversation, "msgid": msgid, "out": record.direction == "out", "author": record.author,
            "name": record.author_name, "kind": record.kind, "text": text, "at": record.created_at.timestamp(),
            **{key: meta[key] for key in ("file", "location", "contact") if meta.get(key)}}


def buyer_profile(lead: Lead, avatar: str | None = None) -> dict[str, Any]:
    """The buyer as the chat shows them: name, phone, their Telegram link and (when given) the avatar's URL."""
    user: dict[str, Any] = {"id": conversation_id(lead.tg_user_id or 0), "name": lead.display_name}
    if avatar:
        user["avatar"] = avatar
    if lead.phone:
        user["profile"] = {"phone": lead.phone}
    if lead.tg_username:
        user["profile_link"] = f"https://t.me/{lead.tg_username}"
    return user


def content(payload: dict[str, Any], media: MediaLinks | None) -> dict[str, Any]:
    """The Chats API ``message`` of an item: text, a file by URL, a location or a contact."""
    kind, text, file = payload["kind"], payload.get("text") or "", payload.get("file")
    if file and media is not None:
        return {"type": FILE_TYPES.get(kind, "file"), "text": text, "file_size": file.get("size") or 0,
                "file_name": file.get("name") or "", "media": media.url(file["id"], name=file.get("name"), mime=file.get("mime"))}
    if payload.get("location"):
        return {"type": "location", "location": {"lat": payload["location"]["lat"], "lon": payload["location"]["lon"]}}
    if payload.get("contact"):
        return {"type": "contact", "contact": {"name": payload["contact"].get("name") or "", "phone": payload["contact"].get("phone") or ""}}
    return {"type": "text", "text": text or f"[{kind}]"}


class Conversations:
    """Carries out claimed ``chat`` jobs: each buyer's in order, buyers side by side."""

    def __init__(self, db: async_sessionmaker[AsyncSession], rest: AmoClient, chats_api: AmojoClient, media: MediaLinks | None,
                 bot_name: str = "optobot", *, avatar: Callable[[int], Awaitable[str | None]] | None = None) -> None:
        self.db = db
        self.rest = rest
        self.api = chats_api
        self.media = media
        self.avatar = avatar  # Telegram user id → a link to their profile photo (None: they show none)
        self.bot_name = bot_name
        self.linked: dict[str, AmojoChat] = {}  # conversation → its chat, once created and linked
        self._scope: str | None = None
        self._scope_until = 0.0

    async def scope(self) -> str | None:
        """The connected channel's ``scope_id`` (None: not connected, chat items wait). Read from the database
        (``connect-channel`` runs in another process); once connected, trusted for a few seconds."""
        now = time.monotonic()
        if self._scope is None or now >= self._scope_until:
            async with self.db() as session:
                connected = await channel.connected(session)
            self._scope, self._scope_until = (connected["scope_id"] if connected else None), now + SCOPE_TTL
        return self._scope

    async def send(self, scope_id: str, jobs: list[Job], outcome: Outcome) -> None:
        """Carry out a round's chat jobs under ``scope_id``."""
        if not jobs:
            return
        async with self.db() as session:
            leads = {lead.id: lead for lead in await session.scalars(select(Lead).where(Lead.id.in_({j.lead_id for j in jobs})))}
        groups: dict[int, list[Job]] = {}
        for job in jobs:
            groups.setdefault(job.lead_id, []).append(job)
        await asyncio.gather(*(self._lead(scope_id, leads.get(lead_id), group, outcome) for lead_id, group in groups.items()))

    async def _lead(self, scope_id: str, lead: Lead | None, jobs: list[Job], outcome: Outcome) -> None:
        """One buyer's jobs strictly in order; a failure postpones it and everything after it."""
        if lead is None:
            for job in jobs:
                outcome.succeed(job, skipped="lead deleted")
            return
        pending = iter(jobs)
        try:
            chat: AmojoChat | None = None
            for job in pending:
                if job.key == STATUS:
                    await self.api.delivery_status(scope_id, job.payload["msgid"], job.payload["status"],
                                                   error_code=job.payload.get("error_code"), error=job.payload.get("error"))
                    outcome.succeed(job)
                    continue
                chat = chat or await self._chat(scope_id, lead, job.payload["conversation"])
                answer = await self.api.send(scope_id, self._body(lead, job.payload)) or {}
                outcome.succeed(job, amojo_message_id=(answer.get("new_message") or {}).get("msgid"))
        except (AmoUnavailable, ChannelRefused) as exc:
            if isinstance(exc, ChannelRefused):
                log.error("amojo.refused", lead_id=lead.id, error=str(exc))
            for job in [job, *pending]:
                outcome.postpone(job, str(exc), uncertain=False)  # the msgid makes a repeat harmless
        except AmoRejected as exc:
            outcome.fail(job, next(iter(exc.errors.values()), exc.detail))
            await self._lead(scope_id, lead, list(pending), outcome)

    def _body(self, lead: Lead, payload: dict[str, Any]) -> dict[str, Any]:
        at = payload["at"]
        body: dict[str, Any] = {"timestamp": int(at), "msec_timestamp": int(at * 1000), "msgid": payload["msgid"],
                                "conversation_id": payload["conversation"], "message": content(payload, self.media)}
        if payload["out"]:
            author = payload.get("name") or (self.bot_name if payload.get("author") in ("bot", "broadcast") else "")
            body |= {"sender": {"id": f"optobot-{payload.get('author') or 'bot'}", "name": author or self.bot_name},
                     "receiver": buyer_profile(lead), "silent": True}
        else:
            body["sender"] = buyer_profile(lead)
        return body

    async def _chat(self, scope_id: str, lead: Lead, conversation: str) -> AmojoChat:
        """The buyer's chat, created and linked to their contact (created if they have none) before its first message."""
        linked = self.linked.get(conversation)
        if linked is not None and linked.contact_id == lead.crm_contact_id and linked.lead_id == lead.id:
            return linked
        async with self.db() as session:
            row = await chats.by_conversation(session, conversation)
        if row is None or row.chat_id is None:
            avatar = await self.avatar(lead.tg_user_id) if self.avatar is not None and lead.tg_user_id else None
            made = await self.api.create_chat(scope_id, conversation, buyer_profile(lead, avatar))
            async with self.db.begin() as session:
                row = await chats.save(session, conversation, lead.id, chat_id=made["id"], user_id=(made.get("user") or {}).get("id"))
        contact_id = lead.crm_contact_id or await self._new_contact(lead)
        if row.contact_id != contact_id:
            await self.rest.post("/api/v4/contacts/chats", [{"chat_id": row.chat_id, "contact_id": contact_id}])
            async with self.db.begin() as session:
                row = await chats.save(session, conversation, lead.id, contact_id=contact_id)
        self.linked[conversation] = row  # chats only ever get linked here: remembered for the next messages
        return row

    async def _new_contact(self, lead: Lead) -> int:
        """A contact for a buyer known only by Telegram (their deal has none), linked to their deal."""
        created = await self.rest.post("/api/v4/contacts", [{"name": lead.display_name, "request_id": f"chat-{lead.id}"}])
        contact_id = created["_embedded"]["contacts"][0]["id"]
        await self.rest.post(f"/api/v4/leads/{lead.crm_lead_id}/link", [{"to_entity_id": contact_id, "to_entity_type": "contacts"}])
        async with self.db.begin() as session:
            fresh = await session.get(Lead, lead.id)
            if fresh is not None and fresh.crm_contact_id is None:
                fresh.crm_contact_id = contact_id
        lead.crm_contact_id = contact_id
        return contact_id


def chat_items(lead: Lead, record: Message) -> list[tuple[str, str, dict[str, Any]]]:
    """The outbox writer's hook: a logged message → its ``chat`` item (or none)."""
    payload = message_payload(lead, record)
    return [(CHAT, MESSAGE, payload)] if payload else []
