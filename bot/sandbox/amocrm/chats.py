"""The sandbox amoCRM's Chats API ("amojo"), with amoCRM's rules.

* Every ``/v2/origin/custom/…`` request must be signed: a ``Date`` within 15 minutes, ``Content-Type:
  application/json``, ``Content-MD5`` of the exact body and ``X-Signature`` (HMAC-SHA1 with the channel's
  secret over method, MD5, content type, date and path). Anything else is refused with 403, as amoCRM does.
* A channel is registered by "support" (:meth:`ChatsApi.register_channel`), connected to the account
  (``scope_id``), then holds chats (one per ``conversation_id``) and their messages (one per ``msgid``: the
  same ``msgid`` again is the same message).
* A buyer's profile (name, avatar, phone, profile link) is the chat's user: set when the chat is created,
  updated by what each of their messages says of them (``sender``).
* A chat linked to a contact (``POST /api/v4/contacts/chats``) shows on that contact's lead; a buyer's
  message in a chat linked to no contact makes an "unsorted" lead (``unsorted``), as amoCRM does.
* :meth:`ChatsApi.reply` plays a manager answering in amoCRM: the signed hook goes to the channel's URL
  (:meth:`ChatsApi.redeliver` sends the same hook again, as amoCRM does when it took an answer for lost).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from aiohttp import web

from bot.sandbox.amocrm.account import ApiError

PREFIX = "/v2/origin/custom/"
FILES = "/amojo-files/"  # files managers attach in amoCRM (public links, as amoCRM's drive gives)
DATE_WINDOW = 15 * 60


@dataclass
class Channel:
    id: str
    secret: str
    code: str
    hook_url: str  # with ":scope_id"


@dataclass
class Chat:
    id: str
    scope_id: str
    conversation_id: str
    user: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)
    contact_id: int | None = None


def refusal(status: int, kind: str, detail: str) -> web.Response:
    return web.json_response({"error_code": status, "error_type": kind, "error_description": detail}, status=status)


class ChatsApi:
    def __init__(self, account: Any) -> None:
        self.account = account  # the REST side (contacts, leads)
        self.amojo_id = str(uuid.uuid4())
        self.channels: dict[str, Channel] = {}
        self.scopes: dict[str, str] = {}  # scope_id → channel id
        self.chats: dict[str, Chat] = {}  # chat id → chat
        self.by_conversation: dict[tuple[str, str], str] = {}  # (scope, conversation_id) → chat id
        self.by_msgid: dict[tuple[str, str], dict[str, Any]] = {}  # (scope, msgid) → message
        self.unsorted: list[dict[str, Any]] = []  # leads amoCRM would make from chats linked to no contact
        self.outage = False
        self.refused = 0
        self._links = itertools.count(1)
        self.files: dict[str, tuple[bytes, str]] = {}
        self.hooks: dict[str, tuple[str, bytes, str]] = {}  # message id → the hook sent for it (URL, body, signature)
        self.base_url = ""  # set by the server

    # ------------------------------------------------------------ support
    def register_channel(self, hook_url: str, code: str = "optobot.telegram") -> Channel:
        """What amoCRM's support does: a channel id and secret for the integration's hook URL (with ``:scope_id``)."""
        channel = Channel(str(uuid.uuid4()), uuid.uuid4().hex + uuid.uuid4().hex[:8], code, hook_url)
        self.channels[channel.id] = channel
        return channel

    # ------------------------------------------------------------ signing
    def check(self, request: web.Request, body: bytes) -> web.Response | None:
        """None if the request is signed as amoCRM requires, else the refusal."""
        channel = self._channel_of(request.path)
        if channel is None:
            return refusal(404, "NOT_FOUND", "unknown channel or scope")
        date = request.headers.get("Date", "")
        try:
            sent = parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            return self._refuse("INVALID_DATE", "Date header is missing or not RFC 2822")
        if abs(time.time() - sent) > DATE_WINDOW:
            return self._refuse("SIGNATURE_EXPIRED", "Date is older than 15 minutes")
        content_type = request.headers.get("Content-Type", "")
        if content_type.split(";")[0].strip() != "application/json":
            return self._refuse("INVALID_CONTENT_TYPE", "Content-Type must be application/json")
        md5 = request.headers.get("Content-MD5", "")
        if md5 != hashlib.md5(body).hexdigest():  # noqa: S324
            return self._refuse("INVALID_CONTENT_MD5", "Content-MD5 does not match the body")
        text = "\n".join((request.method.upper(), md5, content_type, date, request.path))
        expected = hmac.new(channel.secret.encode(), text.encode(), hashlib.sha1).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-Signature", "")):
            return self._refuse("INVALID_SIGNATURE", "X-Signature does not match")
        return None

    def _refuse(self, kind: str, detail: str) -> web.Response:
        self.refused += 1
        return refusal(403, kind, detail)

    def _channel_of(self, path: str) -> Channel | None:
        first = path.removeprefix(PREFIX).split("/", 1)[0]
        return self.channels.get(first) or self.channels.get(self.scopes.get(first, ""))

    # ------------------------------------------------------------- routes
    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("POST", PREFIX + "{channel}/connect", self._connect),
            ("DELETE", PREFIX + "{channel}/disconnect", self._disconnect),
            ("POST", PREFIX + "{scope}/chats", self._chat),
            ("POST", PREFIX + "{scope}/{msgid}/delivery_status", self._delivery),
            ("POST", PREFIX + "{scope}", self._message),
            ("POST", "/api/v4/contacts/chats", self._link),
            ("GET", "/api/v4/contacts/chats", self._links_of),
            ("GET", FILES + "{id}", self._file),
        ]

    def upload(self, data: bytes, content_type: str = "image/jpeg") -> str:
        """A file a manager attaches in amoCRM; its public URL."""
        file_id = uuid.uuid4().hex
        self.files[file_id] = (data, content_type)
        return f"{self.base_url}{FILES}{file_id}"

    async def _file(self, request: web.Request) -> web.Response:
        data, content_type = self.files.get(request.match_info["id"], (b"", ""))
        return web.Response(body=data, content_type=content_type) if content_type else web.Response(status=404)

    async def _connect(self, request: web.Request) -> web.Response:
        channel = self.channels[request.match_info["channel"]]
        body = await request.json()
        if body.get("account_id") != self.amojo_id:
            raise ApiError(400, "account_id is not this account's amojo_id")
        scope_id = f"{channel.id}_{self.amojo_id}"
        self.scopes[scope_id] = channel.id
        return web.json_response({"account_id": self.amojo_id, "scope_id": scope_id, "title": body.get("title", ""),
                                  "hook_api_version": body.get("hook_api_version", "v2")})

    async def _disconnect(self, request: web.Request) -> web.Response:
        channel = request.match_info["channel"]
        for scope_id in [s for s, c in self.scopes.items() if c == channel]:
            del self.scopes[scope_id]
        return web.Response(status=200)

    def _scope(self, request: web.Request) -> str:
        scope_id = request.match_info["scope"]
        if scope_id not in self.scopes:
            raise ApiError(404, "scope is not connected")
        return scope_id

    async def _chat(self, request: web.Request) -> web.Response:
        scope_id = self._scope(request)
        body = await request.json()
        conversation_id, user = body.get("conversation_id"), body.get("user") or {}
        if not conversation_id or not user.get("id"):
            raise ApiError(400, "conversation_id and user.id are required")
        chat = self._chat_of(scope_id, conversation_id, user)
        return web.json_response({"id": chat.id, "user": chat.user})

    def _chat_of(self, scope_id: str, conversation_id: str, user: dict[str, Any]) -> Chat:
        key = (scope_id, conversation_id)
        if key not in self.by_conversation:
            chat = Chat(str(uuid.uuid4()), scope_id, conversation_id, {"id": str(uuid.uuid4()), "client_id": user.get("id")})
            self.chats[chat.id] = chat
            self.by_conversation[key] = chat.id
            self._profile(chat, user)
        return self.chats[self.by_conversation[key]]

    @staticmethod
    def _profile(chat: Chat, user: dict[str, Any]) -> None:
        """What the request says of the buyer replaces what the chat showed (what it leaves out stays)."""
        given = {"name": user.get("name"), "avatar": user.get("avatar"), "phone": (user.get("profile") or {}).get("phone"),
                 "profile_link": user.get("profile_link")}
        chat.user.update({key: value for key, value in given.items() if value})

    async def _message(self, request: web.Request) -> web.Response:
        scope_id = self._scope(request)
        body = await request.json()
        payload = body.get("payload") or {}
        if body.get("event_type") != "new_message" or not payload.get("msgid") or not payload.get("conversation_id"):
            raise ApiError(400, "event_type new_message with payload.msgid and payload.conversation_id is required")
        known = self.by_msgid.get((scope_id, payload["msgid"]))
        if known is None:
            outgoing = bool(payload.get("receiver"))
            user = payload.get("receiver") if outgoing else payload.get("sender")
            chat = self._chat_of(scope_id, payload["conversation_id"], user or {"id": payload["conversation_id"]})
            if not outgoing:
                self._profile(chat, user or {})
            known = {"id": str(uuid.uuid4()), "msgid": payload["msgid"], "direction": "out" if outgoing else "in",
                     "author": (payload.get("sender") or {}).get("name"), "silent": bool(payload.get("silent")),
                     "timestamp": payload.get("timestamp"), "statuses": [], "received_at": time.monotonic(),
                     **(payload.get("message") or {})}
            chat.messages.append(known)
            self.by_msgid[(scope_id, payload["msgid"])] = known
            if not outgoing and chat.contact_id is None and not any(u["chat_id"] == chat.id for u in self.unsorted):
                self.unsorted.append({"chat_id": chat.id, "conversation_id": chat.conversation_id})
        chat = self.chats[self.by_conversation[(scope_id, payload["conversation_id"])]]
        return web.json_response({"new_message": {"conversation_id": chat.id, "sender_id": chat.user["id"],
                                                  "msgid": known["id"], "ref_id": payload["msgid"]}})

    async def _delivery(self, request: web.Request) -> web.Response:
        scope_id = self._scope(request)
        body = await request.json()
        message = next((m for c in self.chats.values() if c.scope_id == scope_id for m in c.messages
                        if m["id"] == request.match_info["msgid"]), None)
        if message is None:
            raise ApiError(404, "message not found")
        message["statuses"].append({k: body.get(k) for k in ("delivery_status", "error_code", "error") if k in body})
        return web.Response(status=200)

    async def _link(self, request: web.Request) -> web.Response:
        items = await request.json()
        if not isinstance(items, list) or not items:
            raise ApiError(400, "an array of {chat_id, contact_id} is expected")
        linked = []
        for item in items:
            chat = self.chats.get(str(item.get("chat_id")))
            if chat is None or item.get("contact_id") not in self.account.contacts:
                raise ApiError(400, "chat or contact not found")
            chat.contact_id = item["contact_id"]
            linked.append({"chat_id": chat.id, "contact_id": chat.contact_id, "id": next(self._links)})
        return web.json_response({"_total_items": len(linked), "_embedded": {"chats": linked}})

    async def _links_of(self, request: web.Request) -> web.Response:
        ids = request.query.getall("chat_id[]", []) + request.query.getall("chat_id", [])
        found = [{"chat_id": c.id, "contact_id": c.contact_id} for c in self.chats.values() if c.id in ids and c.contact_id]
        if not found:
            return web.Response(status=204)
        return web.json_response({"_total_items": len(found), "_embedded": {"chats": found}})

    # --------------------------------------------------- manager actions
    def chat(self, conversation_id: str) -> Chat | None:
        chat_id = next((c for (_, conv), c in self.by_conversation.items() if conv == conversation_id), None)
        return self.chats.get(chat_id) if chat_id else None

    async def reply(self, conversation_id: str, text: str = "", *, manager: str = "Мария Соколова", kind: str = "text",
                    media: str = "", file_name: str = "", secret: str | None = None, date_offset: float = 0,
                    copies: int = 1) -> tuple[int, str]:
        """A manager answers in the chat; the signed hook goes to the channel's URL. Returns (HTTP status, message id).

        ``secret`` signs with another key (a forgery); ``date_offset`` moves the hook's time (a replay); ``copies`` sends
        the hook that many times at once (amoCRM's retry crossing the first; the status is the worst of them).
        """
        chat = self.chat(conversation_id)
        assert chat is not None, f"no chat {conversation_id}"
        channel = self.channels[self.scopes[chat.scope_id]]
        message_id = str(uuid.uuid4())
        now = time.time() + date_offset
        content = {"id": message_id, "type": kind, "text": text, "markup": None, "tag": "", "media": media,
                   "thumbnail": "", "file_name": file_name, "file_size": 0}
        hook = {"account_id": self.amojo_id, "time": int(now), "message": {
            "receiver": {"id": chat.user["id"], "client_id": chat.user["client_id"], "name": chat.user["name"]},
            "sender": {"id": str(uuid.uuid5(uuid.NAMESPACE_OID, manager)), "name": manager},
            "conversation": {"id": chat.id, "client_id": chat.conversation_id},
            "timestamp": int(now), "msec_timestamp": int(now * 1000), "message": content}}
        chat.messages.append({"id": message_id, "msgid": message_id, "direction": "out", "author": manager, "silent": False,
                              "timestamp": int(now), "statuses": [], **content})
        body = json.dumps(hook, ensure_ascii=False).encode()
        signature = hmac.new((secret or channel.secret).encode(), body, hashlib.sha1).hexdigest()
        self.hooks[message_id] = (channel.hook_url.replace(":scope_id", chat.scope_id), body, signature)
        chat.messages[-1]["hook_at"] = time.monotonic()  # when the hook left (benchmarks)
        return max(await asyncio.gather(*(self.redeliver(message_id) for _ in range(copies)))), message_id

    async def redeliver(self, message_id: str) -> int:
        """The hook of a reply (:meth:`reply`) is sent again, byte for byte; its HTTP status."""
        url, body, signature = self.hooks[message_id]
        async with aiohttp.ClientSession() as session, session.post(
            url, data=body, headers={"Content-Type": "application/json", "X-Signature": signature},
        ) as response:
            return response.status

    def transcript(self, conversation_id: str) -> list[str]:
        """The chat as amoCRM shows it: ``← buyer``, ``→ author`` lines, with media and delivery status."""
        chat = self.chat(conversation_id)
        lines = []
        for m in chat.messages if chat else []:
            arrow = "←" if m["direction"] == "in" else "→"
            what = m.get("text") or ""
            if m.get("type") not in (None, "text"):
                what = f"[{m['type']}{' ' + m['file_name'] if m.get('file_name') else ''}] {what}".strip()
            status = {1: " ✓", 2: " ✓✓", -1: " ✗"}.get((m["statuses"] or [{}])[-1].get("delivery_status"), "")
            lines.append(f"{arrow} {m.get('author') or ''}: {what}{status}")
        return lines
