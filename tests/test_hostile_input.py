"""Hostile input at every HTTP endpoint of the running service: malformed bodies with the right secret (the body is
what is tested) and with wrong ones, wrong content types and methods, path tricks. Each gets a 4xx naming the reason
(or a 2xx where the endpoint accepts and cleans such input), never a 5xx or a traceback in the log, and afterwards
valid requests still work. The cases are a fixed list plus mutations of a valid body by ``random.Random(SEED)``."""
from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import random
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from bot.app import App
from bot.bodies import MAX_BODY
from bot.catalog.render import CatalogRenderer
from bot.db.models import Lead
from bot.journal import LEAD_CREATED
from bot.sandbox.amocrm import AmoSandbox
from bot.sandbox.amocrm.chats import Channel
from bot.sandbox.balancer import free_port
from bot.sandbox.telegram import TelegramSandbox
from tests.amojo_support import channel_settings, connect
from tests.buyer import Buyer
from tests.conftest import SECRET, running
from tests.crm_support import amocrm, eventually  # noqa: F401  (fixture)
from tests.relay_support import known_lead
from tests.test_journey_arrival import MARQUIZ

SEED = 20261130
MUTATIONS = 60  # mutated valid bodies per endpoint
JSON, FORM = "application/json", "application/x-www-form-urlencoded"

pytestmark = pytest.mark.usefixtures("no_tracebacks")  # tests/conftest.py


@pytest.fixture
async def service(sandbox: TelegramSandbox, amocrm: AmoSandbox, database_url: str, tmp_path: Path,  # noqa: F811
                  renderer: CatalogRenderer) -> AsyncIterator[tuple[App, Channel, str]]:
    """The whole service with every endpoint on (Telegram's webhook, Marquiz, amoCRM, the chat channel, media):
    the service, its chat channel and the channel's ``scope_id``."""
    port = free_port()
    settings, registered = channel_settings(sandbox, amocrm, database_url, tmp_path, HTTP_PORT=port,
                                            PUBLIC_URL=f"http://127.0.0.1:{port}")
    async with running(settings, renderer) as app:
        yield app, registered, await connect(app, registered)


# ------------------------------------------------------------------ the cases
def nested(depth: int) -> Any:
    value: Any = "x"
    for level in range(depth):
        value = [value] if level % 2 else {"a": value}
    return value


HOSTILE_VALUES: list[Any] = [
    None, "", [], {}, [None], {"": None}, 0, -1, 1.5, True, False, 10**30, -(10**30), 1e308, 2**63, "x" * 20_000,
    "\u0000", "a\u0000b", "\ud800", "\udfff\ud800x", "\u202e\u200b\ufeff", "١٢٣٤٥٦٧٨٩٠", "²³", "𝟗𝟗𝟗", "' OR 1=1 --",
    "<b>", "%00", "../../etc/passwd", nested(40), nested(20), [[[[[]]]]], {"q": {"q": {"q": None}}},
]

BROKEN_JSON: list[tuple[bytes, str]] = [  # refused by every JSON endpoint with the right secret
    (b"", "malformed JSON"), (b"{", "malformed JSON"), (b"{}}", "malformed JSON"), (b'{"a": 1} trailing', "malformed JSON"),
    (b"{'a': 1}", "malformed JSON"), (b'{"a": "\x00"}', "malformed JSON"), (b'{"a": "\xff\xfe"}', "malformed JSON"),
    (b"\xff\xfe\x00{\x00}", "malformed JSON"), (b"\xef\xbb\xbf[]", "expected a JSON object"),
    (b'{"a": 1' + b"1" * 5000 + b"}", "malformed JSON"),
    (b'{"a": NaN}', "is not a JSON number"), (b'{"a": [-Infinity]}', "is not a JSON number"), (b'{"a": 1e999}', "out of range"),
    (b"null", "expected a JSON object"), (b"[]", "expected a JSON object"), (b'[{"a": 1}]', "expected a JSON object"),
    (b'"text"', "expected a JSON object"), (b"12345678901234567890", "expected a JSON object"), (b"true", "expected a JSON object"),
    (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested"), (b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}", "nested"),
    (b'{"a": "' + b"x" * (MAX_BODY + 10) + b'"}', "larger than"),
]

BROKEN_FORMS: list[tuple[bytes, str]] = [  # refused by every form endpoint with the right secret
    (b"contacts=1&contacts[name]=2", "conflicts"), (b"a" + b"[b]" * 40 + b"=1", "nested deeper"),
    (b"\xff=1", "malformed form body"), (b"a[\xc3]=1", "malformed form body"),
    (b"a[%C2%B2]=1&a[1]=2", "malformed form body"), ("&".join(f"f{i}=1" for i in range(1200)).encode(), "more than 1000"),
    (b"a=" + b"x" * (MAX_BODY + 10), "larger than"),
]

NON_STANDARD = ["NaN", "-Infinity", "1e999", "-0.0", "1" * 5000]  # numbers JSON does not have, or no database column takes

WRONG_TYPES: list[tuple[str, bytes]] = [
    ("text/plain", b"{}"), ("application/xml", b"<a/>"), ("text/html; charset=utf-8", b"<html>"), ("image/png", b"\x89PNG"),
    ("application/octet-stream", b"\x00\x01"), ("application/jsonx", b"{}"), ("multipart/mixed; boundary=x", b"--x--"),
]


def paths(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON tree (the root too)."""
    yield at
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*at, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*at, index))


def mutate(valid: dict[str, Any], rng: random.Random) -> Any:
    """``valid`` with one place changed: a hostile value, a number as text, a value wrapped in a list, or a key gone."""
    body = copy.deepcopy(valid)
    at = rng.choice([p for p in paths(body) if p])
    *parent_at, last = at
    parent = body
    for step in parent_at:
        parent = parent[step]
    kind = rng.randrange(4)
    if kind == 0 and isinstance(parent, dict):
        del parent[last]
    elif kind == 1:
        parent[last] = [parent[last]]
    elif kind == 2 and isinstance(parent[last], (int, float)) and not isinstance(parent[last], bool):
        parent[last] = str(parent[last])
    else:
        parent[last] = rng.choice(HOSTILE_VALUES)
    return body if rng.random() > 0.05 else [body]


def mutations(valid: dict[str, Any], seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [json.dumps(mutate(valid, rng)).encode() for _ in range(MUTATIONS)]  # ASCII: lone surrogates as \ud800 escapes


def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """A JSON tree as PHP-style form pairs (``a[b][0]=v``)."""
    if isinstance(value, dict):
        return [pair for key, item in value.items() for pair in flatten(item, f"{prefix}[{key}]" if prefix else str(key))]
    if isinstance(value, list):
        return [pair for index, item in enumerate(value) for pair in flatten(item, f"{prefix}[{index}]")]
    return [(prefix, "" if value is None else str(value))]


def form_mutations(valid: list[tuple[str, str]], seed: int) -> list[bytes]:
    """``valid`` pairs with one change: a key repeated with another value, a key gone, a hostile key or value."""
    rng = random.Random(seed)
    hostile_keys = ["", "[]", "a[", "a]]", "[x]", "a[][][]", "a[99999999999999999999]", "a[-1]", "leads[status][²]",
                    "contacts[name][0]", "leads[status][0][id][x]", "\u0000", "a[\ud800]"]
    bodies = []
    for _ in range(MUTATIONS):
        pairs = list(valid)
        index = rng.randrange(len(pairs))
        kind = rng.randrange(4)
        if kind == 0:
            pairs.append((pairs[index][0], rng.choice(["", "x", "-5", "1e9", "9" * 30])))
        elif kind == 1:
            del pairs[index]
        elif kind == 2:
            pairs.insert(index, (rng.choice(hostile_keys), "1"))
        else:
            pairs[index] = (pairs[index][0], str(rng.choice(HOSTILE_VALUES)))
        bodies.append(urlencode(pairs, errors="surrogatepass").encode())
    return bodies


# ------------------------------------------------------------------ checks
class Probe:
    """Sends the cases and keeps every answer that breaks the rule (all of them are reported, not only the first)."""

    def __init__(self, app: App) -> None:
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", timeout=30)
        self.problems: list[str] = []

    async def refused(self, path: str, body: bytes, headers: dict[str, Any], reason: str = "") -> httpx.Response:
        """A 4xx whose JSON body names the reason (``reason`` in it, when given)."""
        answer = await self.http.post(path, content=body, headers=headers)
        if not 400 <= answer.status_code < 500 or reason not in self._error(answer):
            self.problems.append(f"{path[:50]} {body[:80]!r}: {answer.status_code} {answer.text[:200]} (wanted a 4xx naming {reason!r})")
        return answer

    async def answered(self, path: str, body: bytes, headers: dict[str, Any]) -> httpx.Response:
        """Accepted, or refused with the reason: never a 5xx."""
        answer = await self.http.post(path, content=body, headers=headers)
        if answer.status_code >= 300 and (answer.status_code >= 500 or not self._error(answer)):
            self.problems.append(f"{path[:50]} {body[:80]!r}: {answer.status_code} {answer.text[:200]}")
        return answer

    @staticmethod
    def _error(answer: httpx.Response) -> str:
        try:
            return str(answer.json()["error"])
        except (ValueError, KeyError, TypeError):
            return ""

    async def healthy(self) -> None:
        """The rule held for every case, and the service still answers ``/healthz`` and ``/readyz``."""
        assert not self.problems, "\n".join(self.problems)
        assert (await self.http.get("/healthz")).status_code == 200
        assert (await self.http.get("/readyz")).status_code == 200


@pytest.fixture
async def probe(service: tuple[App, Channel, str]) -> AsyncIterator[Probe]:
    probing = Probe(service[0])
    async with probing.http:
        yield probing


async def raw_status(port: int, request: bytes) -> int:
    """The status of a request sent as bytes (path tricks no HTTP client would send as given)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        status = await reader.readline()
    finally:
        writer.close()
    return int(status.split()[1])


# ------------------------------------------------------------------ the endpoints
async def test_hostile_marquiz_bodies_get_4xx_with_the_reason_and_a_valid_submission_still_makes_its_lead(
        service: tuple[App, Channel, str], probe: Probe) -> None:
    app, _, _ = service
    url = f"/webhooks/marquiz/{SECRET}"
    for body, reason in BROKEN_JSON + [
            (b"{}", "not a quiz submission"), (b'{"contacts": [1]}', "contacts must be an object"),
            (b'{"answers": {"q": 1}}', "answers must be a list"), (b'{"answers": [null]}', "answers[0] must be an object"),
            (b'{"contacts": {"phone": {"a": 1}}}', "contacts.phone must be a string"),
            (b'{"contacts": {"name": "A"}, "extra": {"utm": [1]}}', "extra.utm must be an object")]:
        await probe.refused(url, body, {"Content-Type": JSON}, reason)
    for body, reason in BROKEN_FORMS:
        await probe.refused(url, body, {"Content-Type": FORM}, reason)
    for content_type, body in WRONG_TYPES:
        await probe.refused(url, body, {"Content-Type": content_type}, "unsupported content type")
    await probe.refused(url, b"--x\r\n", {"Content-Type": "multipart/form-data"}, "without a boundary")
    contacts = '"contacts": {"name": "Ира", "phone": "79990003344"}'
    for number in NON_STANDARD:
        for body in (f'{{{contacts}, "extra": {{"n": {number}}}}}', f'{{{contacts}, "created": {number}, "quiz": {{"id": {number}}}}}',
                     f'{{{contacts}, "extra": {{"utm": {{"source": {number}}}}}}}'):
            await probe.answered(url, body.encode(), {"Content-Type": JSON})
    for body in mutations(MARQUIZ, SEED):
        await probe.answered(url, body, {"Content-Type": JSON})
    for body in form_mutations(flatten(MARQUIZ), SEED):
        await probe.answered(url, body, {"Content-Type": FORM})
    for secret in ("wrong-secret", SECRET[:-1], SECRET + "x", "x" * 4000, "%00", SECRET.upper(), "%D0%AF" * 10):
        for body in (json.dumps(MARQUIZ).encode(), b"{", b"[" * 1000):
            await probe.refused(f"/webhooks/marquiz/{secret}", body, {"Content-Type": JSON}, "not found")

    await probe.healthy()
    valid = await probe.http.post(url, json={**MARQUIZ, "contacts": {**MARQUIZ["contacts"], "phone": "79990001122"}})
    assert valid.status_code == 200, valid.text
    async with app.db() as session:
        lead = await session.get(Lead, valid.json()["lead_id"])
    assert lead.phone == "+79990001122" and lead.first_name == "Анна"


async def test_hostile_telegram_updates_get_4xx_with_the_reason_and_a_valid_update_is_still_handled(
        service: tuple[App, Channel, str], probe: Probe, buyer: Buyer) -> None:
    """Telegram's webhook answers 200 to an update it stores (one it has no use for is handled and ignored), a 4xx
    with the reason to anything that is not an update, and 401 without the secret token."""
    app, _, _ = service
    url, token = "/webhooks/telegram", app.telegram_secret_token
    headers = {"X-Telegram-Bot-Api-Secret-Token": token, "Content-Type": JSON}
    update = {"update_id": 500, "message": {
        "message_id": 1, "date": 1767225600, "chat": {"id": 4242, "type": "private", "first_name": "Anna"},
        "from": {"id": 4242, "is_bot": False, "first_name": "Anna"}, "text": "привет"}}
    for body, reason in BROKEN_JSON + [(b"{}", "not a Telegram update"), (b'{"update_id": "x"}', "not a Telegram update"),
                                       (b'{"update_id": 1, "message": []}', "not a Telegram update")]:
        await probe.refused(url, body, headers, reason)
    for content_type, body in [*WRONG_TYPES, (FORM, b"update_id=1")]:
        await probe.refused(url, body, {**headers, "Content-Type": content_type}, "unsupported content type")
    for changed in ({"update_id": 2**63}, {"update_id": -(2**63) - 1}, {"update_id": 10**30}, {"update_id": 1.5},
                    {"message": {**update["message"], "chat": {"id": 10**30, "type": "private"}}},
                    {"message": {**update["message"], "date": 10**30}}, {"message": {**update["message"], "text": "\u0000\ud800"}}):
        await probe.answered(url, json.dumps({**update, **changed}).encode(), headers)  # a number no database column takes
    for number in NON_STANDARD:
        await probe.answered(url, json.dumps({**update, "x": "n"}).replace('"n"', number).encode(), headers)
    for body in mutations(update, SEED):
        await probe.answered(url, body, headers)
    for given in ({}, {"X-Telegram-Bot-Api-Secret-Token": ""}, {"X-Telegram-Bot-Api-Secret-Token": token[:-1]},
                  {"X-Telegram-Bot-Api-Secret-Token": token + "x"}, {"X-Telegram-Bot-Api-Secret-Token": "x" * 4000}):
        for body in (json.dumps(update).encode(), b"{", b"[" * 1000):
            await probe.refused(url, body, {"Content-Type": JSON, **given}, "unauthorized")

    await probe.healthy()
    await app.inbox.idle()
    buyer.send("/start")  # the sandbox delivers it to the webhook
    intro, question = await buyer.replies(2)
    assert question["text"].startswith("Вопрос 1 из 4")


async def test_hostile_amocrm_webhooks_get_4xx_with_the_reason_and_a_valid_one_still_moves_the_lead(
        service: tuple[App, Channel, str], probe: Probe, amocrm: AmoSandbox, buyer: Buyer) -> None:  # noqa: F811
    app, _, _ = service
    url = f"/webhooks/amocrm/{SECRET}"
    await known_lead(app, buyer, crm_lead_id=4321)
    status = amocrm.account.status_id("Привлечение", "Каталог отправлен")
    valid = [("leads[status][0][id]", "4321"), ("leads[status][0][status_id]", str(status)),
             ("leads[status][0][old_status_id]", "2"), ("account[subdomain]", "optobot"),
             ("account[id]", "1")]
    for body, reason in BROKEN_FORMS + [(b"leads=x", "leads must be"), (b"leads[status][0][id]=-1", "must be an amoCRM id"),
                                        (b"leads[status][0][id]=%D9%A1%D9%A2", "must be an amoCRM id"),
                                        (b"leads[status][0][id]=" + b"9" * 30, "must be an amoCRM id")]:
        await probe.refused(url, body, {"Content-Type": FORM}, reason)
    for content_type, body in [*WRONG_TYPES, (JSON, b'{"leads": {}}')]:
        await probe.refused(url, body, {"Content-Type": content_type}, "unsupported content type")
    for body in form_mutations(valid, SEED):
        await probe.answered(url, body, {"Content-Type": FORM})
    for secret in ("wrong-secret", SECRET + "x", "x" * 4000, "%00"):
        await probe.refused(f"/webhooks/amocrm/{secret}", urlencode(valid).encode(), {"Content-Type": FORM}, "not found")

    await probe.healthy()
    lead = await known_lead(app, buyer, tg_user_id=buyer.id + 1, crm_lead_id=4322)  # one no mutation touched
    answer = await probe.http.post(url, content=urlencode(valid).replace("4321", "4322"), headers={"Content-Type": FORM})
    assert answer.status_code == 200 and answer.json()["moved"] == 1, answer.text
    async with app.db() as session:
        assert (await session.get(Lead, lead.id)).stage == "catalog_sent"


def signed(secret: str, body: bytes) -> dict[str, str]:
    return {"Content-Type": JSON, "X-Signature": hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()}


async def test_hostile_chats_api_hooks_get_4xx_with_the_reason_and_a_managers_reply_still_reaches_the_buyer(
        service: tuple[App, Channel, str], probe: Probe, amocrm: AmoSandbox, sandbox: TelegramSandbox,  # noqa: F811
        buyer: Buyer) -> None:
    """Signed with the channel secret (so the body is what is tested), and unsigned or signed with another key (401)."""
    app, registered, scope = service
    lead = await known_lead(app, buyer, crm_lead_id=None, responsible_user_id=None)
    async with app.db.begin() as session:
        await app.journal.event(session, await session.get(Lead, lead.id), LEAD_CREATED, via="telegram")
    buyer.send("Скажите, работаете с ИП?")
    conversation = f"tg-{buyer.id}"
    await eventually(lambda: amocrm.chats.chat(conversation) is not None, timeout=20)
    now = int(time.time())
    hook = {"account_id": "acc", "time": now, "message": {
        "receiver": {"id": "r", "client_id": conversation, "name": "Анна"}, "sender": {"id": "s", "name": "Мария"},
        "conversation": {"id": "c", "client_id": "tg-nobody"}, "timestamp": now, "msec_timestamp": now * 1000,
        "message": {"id": "m-1", "type": "text", "text": "привет", "markup": None, "tag": "", "media": "", "thumbnail": "",
                    "file_name": "", "file_size": 0}}}
    url = f"/webhooks/amojo/{scope}"
    message = hook["message"]
    for body, reason in [*((body, reason.replace("expected a JSON object", "not a Chats API")) for body, reason in BROKEN_JSON),
                         (b"{}", "not a Chats API message hook"), (b'{"message": []}', "not a Chats API"),
                         (b'{"message": {"message": {"id": 1}, "conversation": {"client_id": "x"}}, "time": "soon"}', "not a Chats API"),
                         (json.dumps({**hook, "time": 10**400}).encode(), "not a Chats API"),
                         (json.dumps({**hook, "time": "nan"}).encode(), "time must be a number"),
                         (json.dumps({**hook, "time": "-inf"}).encode(), "time must be a number"),
                         (json.dumps({**hook, "message": {**message, "message": {"id": "x" * 65}}}).encode(), "at most 64"),
                         (json.dumps({**hook, "message": {**message, "conversation": {"client_id": "x" * 65}}}).encode(), "at most 64"),
                         (json.dumps({**hook, "message": {**message, "message": {"id": "m-2", "type": ["text"]}}}).encode(), "must be text"),
                         (json.dumps({**hook, "message": {**message, "sender": "Мария"}}).encode(), "must be objects")]:
        await probe.refused(url, body, signed(registered.secret, body), reason)
    for number in NON_STANDARD:
        content = {**message["message"], "id": f"m-{number[:6]}", "file_size": "n"}
        body = json.dumps({**hook, "message": {**message, "message": content}}).replace('"n"', number).encode()
        await probe.answered(url, body, signed(registered.secret, body))
    for index, body in enumerate(mutations(hook, SEED)):
        body = body.replace(b'"m-1"', f'"m-{index}"'.encode())  # each one a new reply (not a repeated hook)
        await probe.answered(url, body, signed(registered.secret, body))
    body = json.dumps(hook).encode()
    for headers in ({"Content-Type": JSON}, {"X-Signature": ""}, signed("another-key", body), {"X-Signature": "zz" * 20},
                    {"X-Signature": b"\xff" * 40}):
        await probe.refused(url, body, headers, "X-Signature")
    await probe.refused(f"/webhooks/amojo/{'x' * 4000}", body, signed(registered.secret, body), "scope_id")

    await probe.healthy()
    status, _ = await amocrm.chats.reply(conversation, "настоящий ответ")
    assert status == 200
    await eventually(lambda: any(m.get("text") == "настоящий ответ" for m in sandbox.messages(buyer.id, from_bot=True)), timeout=15)


async def test_media_path_tricks_and_forged_tokens_get_404_and_a_real_link_still_serves_the_file(
        service: tuple[App, Channel, str], probe: Probe, sandbox: TelegramSandbox, buyer: Buyer) -> None:
    app, _, _ = service
    file_id = sandbox.send_media(buyer.id, "photo", content=b"a photo")["photo"][-1]["file_id"]
    token = app.media.url(file_id, name="фото.jpg", mime="image/jpeg").rsplit("/", 1)[1]
    payload, signature = token.split(".")
    for forged in ("x", "a.b.c", f"{payload}.", f".{signature}", f"{payload}.{signature}x", f"{payload}x.{signature}",
                   "A" * 6000, f"{payload}.{'A' * 6000}", "%00", "%ff%fe", "%ED%A0%80", "%ED%A0%80.%ED%A0%80", "%C0%AE%C0%AE",
                   "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fhealthz", f"{payload}%00.{signature}", "\u0416.\u0416"):
        answer = await probe.http.get(f"/media/{forged}")
        if answer.status_code != 404 or probe._error(answer) != "no such file":
            probe.problems.append(f"/media/{forged[:40]}: {answer.status_code} {answer.text[:200]}")
    for request in (b"GET /media/..%2F..%2Fetc%2Fpasswd HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET /media/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET /media/" + token.encode() + b"/../../healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET /media/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET /media/\xed\xa0\x80.\xed\xa0\x80 HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET /media/" + b"A" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"):
        if not 400 <= (status := await raw_status(app.http_port, request)) < 500:
            probe.problems.append(f"{request[:60]!r}: {status}")

    await probe.healthy()
    answer = await probe.http.get(f"/media/{token}")
    assert answer.status_code == 200 and answer.content == b"a photo"


async def test_methods_an_endpoint_does_not_take_get_405_and_unknown_paths_404(service: tuple[App, Channel, str], probe: Probe) -> None:
    app, _, scope = service
    posted = [f"/webhooks/marquiz/{SECRET}", f"/webhooks/amocrm/{SECRET}", "/webhooks/telegram", f"/webhooks/amojo/{scope}"]
    fetched = ["/healthz", "/readyz", "/metrics", "/media/x.y"]
    asked = [(method, path, 405) for path in posted for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS")]
    asked += [(method, path, 405) for path in fetched for method in ("POST", "PUT", "DELETE", "PATCH")]
    asked += [("POST", path, 404) for path in ("/webhooks/marquiz", "/webhooks/marquiz/", "/webhooks/marquiz/a/b", "/webhooks/other/x",
                                                "/media", "/media/", "/" + "x" * 4000, "/healthz/x", "/%00", "/%ff")]
    asked += [("GET", "/healthz" + query, 200) for query in ("?a=%ff", "?" + "a=1&" * 2000, "?x=%00")]
    for method, path, wanted in asked:
        if (status := (await probe.http.request(method, path, content=b"{}")).status_code) != wanted:
            probe.problems.append(f"{method} {path[:50]}: {status}, wanted {wanted}")
    if not 400 <= (status := await raw_status(app.http_port, b"BREW /healthz HTTP/1.1\r\nHost: x\r\n\r\n")) < 500:
        probe.problems.append(f"BREW /healthz: {status}")
    await probe.healthy()
