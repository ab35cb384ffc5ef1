"""The sandbox amoCRM over HTTP: API v4 paths, OAuth, rate limit, outages, faults, outgoing webhooks.

Two read-only control routes (not amoCRM's; outside the rate limit and not themselves recorded), for a process
that drives the sandbox from outside (``python -m bot.sandbox.amocrm``, ``bench.crm``):

- ``GET /sandbox/requests``: ``[{"at", "method", "path", "status"}]``, every request seen, in arrival order;
- ``GET /sandbox/notes``: ``[{"id", "entity_id", "text", "at"}]``, every note, ``at`` when the request that added it
  was carried out (a note added in-process, as by a test, is stamped at the next request; ``null`` until then).

``at`` is ``time.monotonic()``, comparable across processes on Linux (one system-wide clock).
"""
from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from bot.sandbox.amocrm.account import Account, ApiError
from bot.sandbox.amocrm.chats import FILES, PREFIX, ChatsApi

NGINX_PAGE = "<html><head><title>{status}</title></head><body><center><h1>{status}</h1></center><hr><center>nginx</center></body></html>"
HTML_429 = NGINX_PAGE.format(status="429 Too Many Requests")
HTML_403 = NGINX_PAGE.format(status="403 Forbidden")
ACCESS_TTL = 86400
CONTROL = "/sandbox/"


@dataclass
class Seen:
    at: float
    method: str
    path: str
    status: int


@dataclass
class Fault:
    status: int
    times: int
    path: str | None
    after: bool  # answer the status only after carrying the request out
    method: str | None = None


@dataclass
class Hold:
    method: str
    path: str
    release: asyncio.Event = field(default_factory=asyncio.Event)
    reached: asyncio.Event = field(default_factory=asyncio.Event)


def peak_rate(stamps: list[float], window: float = 1.0) -> int:
    """The most of the (sorted) ``stamps`` within any ``window`` seconds."""
    best, start = 0, 0
    for end, at in enumerate(stamps):
        while at - stamps[start] > window:
            start += 1
        best = max(best, end - start + 1)
    return best


def _json(data: Any, status: int = 200, content_type: str = "application/hal+json") -> web.Response:
    return web.Response(text=json.dumps(data, ensure_ascii=False), status=status, content_type=content_type)


def _ints(query: Any, name: str) -> list[int]:
    values = query.getall(f"{name}[]", []) + query.getall(name, [])
    return [int(v) for v in values if str(v).lstrip("-").isdigit()]


class AmoSandbox:
    """One account behind an aiohttp app. Knobs: ``rate_limit``, ``outage``, ``blocked``, :meth:`inject`, :meth:`hold`."""

    def __init__(self, account: Account | None = None, *, rate_limit: int | None = 7, block_after: int = 100) -> None:
        self.account = account or Account().seed()
        self.rate_limit = rate_limit
        self.block_after = block_after
        self.outage = False
        self.blocked = False
        self.requests: list[Seen] = []
        self.note_at: dict[int, float] = {}  # note id → monotonic time its request was carried out (not in the API's answers)
        self.refreshes = 0
        self.long_lived_token = secrets.token_urlsafe(32)
        self.client_id, self.client_secret = "sandbox-integration", secrets.token_urlsafe(24)
        self.redirect_uri = "https://example.com/amocrm/oauth"
        self.webhook_urls: list[str] = []
        self.chats = ChatsApi(self.account)  # the Chats API ("amojo"), served on the same address
        self._access: dict[str, float] = {self.long_lived_token: float("inf")}
        self._refresh: set[str] = set()
        self._codes: dict[str, float] = {}
        self._window: deque[float] = deque()
        self._rejections: deque[float] = deque()
        self._faults: list[Fault] = []
        self._holds: list[Hold] = []
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    # ----------------------------------------------------------------- knobs
    def inject(self, status: int, times: int = 1, *, path: str | None = None, after: bool = False, method: str | None = None) -> None:
        """Answer the next ``times`` requests (``method``, to ``path``…) with ``status``; ``after``: carry them out first."""
        self._faults.append(Fault(status, times, path, after, method))

    def hold(self, method: str, path: str) -> Hold:
        """Carry out the next matching request, then keep its answer until ``hold.release`` is set."""
        held = Hold(method, path)
        self._holds.append(held)
        return held

    def issue_code(self) -> str:
        """An authorization code, as the integration settings show it (valid 20 minutes, single use)."""
        code = secrets.token_urlsafe(16)
        self._codes[code] = time.time() + 1200
        return code

    def expire_access_tokens(self) -> None:
        """Every OAuth access token expires now (the long-lived token stays)."""
        for token in self._access:
            if token != self.long_lived_token:
                self._access[token] = 0

    def peak_rate(self, window: float = 1.0) -> int:
        """The most requests that arrived within any ``window`` seconds."""
        return peak_rate([r.at for r in self.requests], window)

    def count(self, status: int | None = None, path: str | None = None) -> int:
        return sum(1 for r in self.requests if (status is None or r.status == status) and (path is None or r.path.startswith(path)))

    def describe_lead(self, lead_id: int) -> str:
        return self.account.describe_lead(lead_id)

    # ------------------------------------------------------ manager actions
    async def move_lead(self, lead_id: int, status_id: int, pipeline_id: int | None = None) -> list[int]:
        """A manager drags the lead to another stage; subscribed webhooks are told. Returns their HTTP statuses."""
        lead = self.account.leads[lead_id]
        old = (lead["status_id"], lead["pipeline_id"])
        self.account.update_leads([{"id": lead_id, "status_id": status_id, **({"pipeline_id": pipeline_id} if pipeline_id else {})}])
        return await self._notify("status", lead, old_status_id=old[0], old_pipeline_id=old[1])

    async def notify_status(self, lead_id: int, old_status_id: int, old_pipeline_id: int) -> list[int]:
        """The status webhook of a change made through the API (amoCRM sends those too; the sandbox only when asked)."""
        return await self._notify("status", self.account.leads[lead_id], old_status_id=old_status_id, old_pipeline_id=old_pipeline_id)

    async def set_price(self, lead_id: int, price: int) -> list[int]:
        """A manager edits the deal's budget (a "lead edited" webhook)."""
        self.account.update_leads([{"id": lead_id, "price": price}])
        return await self._notify("update", self.account.leads[lead_id])

    async def set_responsible(self, lead_id: int, user_id: int) -> list[int]:
        lead = self.account.leads[lead_id]
        old = lead["responsible_user_id"]
        self.account.update_leads([{"id": lead_id, "responsible_user_id": user_id}])
        return await self._notify("responsible", lead, old_responsible_user_id=old)

    def complete_tasks(self, lead_id: int) -> None:
        for task in self.account.find_tasks(entity_ids=[lead_id], is_completed=False):
            task.update(is_completed=True, result={"text": "Сделано"}, updated_at=int(time.time()))

    async def add_task(self, lead_id: int, text: str, complete_till: int, task_type_id: int = 1,
                       responsible_user_id: int | None = None) -> tuple[int, list[int]]:
        """A manager sets a task on the lead (an "add task" webhook); returns its id and the webhooks' HTTP statuses."""
        item = {"entity_type": "leads", "entity_id": lead_id, "text": text, "complete_till": complete_till, "task_type_id": task_type_id,
                **({"responsible_user_id": responsible_user_id} if responsible_user_id else {})}
        task_id = self.account.add_tasks([item])[0]["id"]
        return task_id, await self._notify_task("add", self.account.tasks[task_id])

    async def edit_task(self, task_id: int, **changes: Any) -> list[int]:
        """A manager edits a task (text, complete_till, is_completed…): an "update task" webhook."""
        self.account.update_tasks([{"id": task_id, **changes}])
        return await self._notify_task("update", self.account.tasks[task_id])

    async def delete_task(self, task_id: int) -> list[int]:
        """A manager deletes a task: a "delete task" webhook."""
        return await self._notify_task("delete", self.account.tasks.pop(task_id))

    async def _notify_task(self, action: str, task: dict[str, Any]) -> list[int]:
        """amoCRM's task webhook: ``task[add|update|delete][0][…]``, the lead as ``element_id`` with ``element_type`` 2."""
        prefix = f"task[{action}][0]"
        values = {"id": task["id"], "element_id": task["entity_id"], "element_type": 2 if task["entity_type"] == "leads" else 1,
                  "date_create": task["created_at"], "text": task["text"], "status": int(task["is_completed"]), "account_id": self.account.id,
                  "created_user_id": task["created_by"], "last_modified": task["updated_at"], "responsible_user_id": task["responsible_user_id"],
                  "complete_till": task["complete_till"], "task_type": task["task_type_id"]}
        return await self._post([(f"{prefix}[{key}]", str(value)) for key, value in values.items()])

    async def _notify(self, action: str, lead: dict[str, Any], **old: Any) -> list[int]:
        prefix = f"leads[{action}][0]"
        pairs = [(f"{prefix}[{key}]", str(value)) for key, value in {
            "id": lead["id"], "name": lead["name"], "status_id": lead["status_id"], "pipeline_id": lead["pipeline_id"],
            "price": lead["price"], "responsible_user_id": lead["responsible_user_id"], "last_modified": lead["updated_at"],
            "modified_user_id": lead["responsible_user_id"], "created_user_id": 0, "date_create": lead["created_at"],
            "account_id": self.account.id, **old,
        }.items()]
        for i, f in enumerate(lead["fields"]):
            pairs += [(f"{prefix}[custom_fields][{i}][id]", str(f["field_id"])), (f"{prefix}[custom_fields][{i}][name]", f["field_name"])]
            pairs += [(f"{prefix}[custom_fields][{i}][values][{j}][value]", str(v["value"])) for j, v in enumerate(f["values"])]
        return await self._post(pairs)

    async def _post(self, pairs: list[tuple[str, str]]) -> list[int]:
        """One webhook (form-encoded, with the account) to every subscribed URL; their HTTP statuses."""
        pairs = [*pairs, ("account[subdomain]", self.account.subdomain), ("account[id]", str(self.account.id)),
                 ("account[_links][self]", self.base_url)]
        body = urlencode(pairs)
        statuses = []
        async with aiohttp.ClientSession() as session:
            for url in self.webhook_urls:
                async with session.post(url, data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}) as response:
                    statuses.append(response.status)
        return statuses

    # ------------------------------------------------------------ the server
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._gate])
        a = self.account
        routes = [
            ("POST", "/oauth2/access_token", self._token),
            ("GET", "/api/v4/account", self._account),
            ("GET", "/api/v4/users", self._listing("users", lambda: a.users.values())),
            ("GET", "/api/v4/leads/pipelines", self._pipelines),
            ("GET", "/api/v4/leads/loss_reasons", self._listing("loss_reasons", lambda: a.loss_reasons.values())),
            ("GET", "/api/v4/leads/custom_fields", self._listing("custom_fields", lambda: a.fields["leads"].values())),
            ("GET", "/api/v4/contacts/custom_fields", self._listing("custom_fields", lambda: a.fields["contacts"].values())),
            ("GET", "/api/v4/contacts", self._contacts),
            ("GET", "/api/v4/contacts/{id:\\d+}", self._contact),
            ("POST", "/api/v4/contacts", self._batch("contacts", a.add_contacts)),
            ("PATCH", "/api/v4/contacts", self._batch("contacts", a.update_contacts)),
            ("GET", "/api/v4/leads", self._leads),
            ("GET", "/api/v4/leads/{id:\\d+}", self._lead),
            ("POST", "/api/v4/leads", self._batch("leads", a.add_leads)),
            ("PATCH", "/api/v4/leads", self._batch("leads", a.update_leads)),
            ("POST", "/api/v4/leads/complex", self._complex),
            ("POST", "/api/v4/leads/{id:\\d+}/link", self._link),
            ("GET", "/api/v4/leads/notes", self._notes),
            ("GET", "/api/v4/leads/{id:\\d+}/notes", self._notes),
            ("POST", "/api/v4/leads/notes", self._batch("notes", a.add_notes)),
            ("GET", "/api/v4/tasks", self._tasks),
            ("POST", "/api/v4/tasks", self._batch("tasks", a.add_tasks)),
            ("PATCH", "/api/v4/tasks", self._batch("tasks", a.update_tasks)),
            ("GET", "/sandbox/requests", self._seen_requests),
            ("GET", "/sandbox/notes", self._seen_notes),
        ]
        for method, path, handler in [*routes, *self.chats.routes()]:
            app.router.add_route(method, path, handler)
        return app

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith(CONTROL):
            return await handler(request)
        now = time.monotonic()
        response = await self._answer(request, handler, now)
        self.requests.append(Seen(now, request.method, request.path, response.status))
        if len(self.note_at) < len(self.account.notes):
            done = time.monotonic()
            for note_id in self.account.notes.keys() - self.note_at.keys():
                self.note_at[note_id] = done
        return response

    async def _answer(self, request: web.Request, handler: Any, now: float) -> web.StreamResponse:
        if request.path.startswith(PREFIX):
            return await self._chats_api(request, handler)
        if request.path.startswith(FILES):
            return await handler(request)
        if self.outage:
            return web.Response(text=NGINX_PAGE.format(status="503 Service Temporarily Unavailable"), status=503, content_type="text/html")
        if self.blocked:
            return web.Response(text=HTML_403, status=403, content_type="text/html")
        if self._over_limit(now):
            return web.Response(text=HTML_429, status=429, content_type="text/html")
        fault = self._fault(request, after=False)
        if fault is not None:
            return self._fault_response(fault)
        if request.path != "/oauth2/access_token" and not self._authorised(request):
            return _json(ApiError(401, "Unauthorized").body, 401, "application/problem+json")
        try:
            response = await handler(request)
        except ApiError as exc:
            return _json(exc.body, exc.status, "application/problem+json")
        fault = self._fault(request, after=True)
        held = next((h for h in self._holds if h.method == request.method and request.path.startswith(h.path)), None)
        if held is not None:
            self._holds.remove(held)
            held.reached.set()
            await held.release.wait()
        return self._fault_response(fault) if fault is not None else response

    async def _chats_api(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """The Chats API: its own outage switch (``chats.outage``, or the whole sandbox's), signatures instead of tokens."""
        if self.outage or self.chats.outage:
            return web.Response(text=NGINX_PAGE.format(status="503 Service Temporarily Unavailable"), status=503, content_type="text/html")
        refused = self.chats.check(request, await request.read())
        if refused is not None:
            return refused
        fault = self._fault(request, after=False)
        if fault is not None:
            return self._fault_response(fault)
        try:
            response = await handler(request)
        except ApiError as exc:
            return _json(exc.body, exc.status, "application/json")
        fault = self._fault(request, after=True)
        return self._fault_response(fault) if fault is not None else response

    def _over_limit(self, now: float) -> bool:
        if self.rate_limit is None:
            return False
        while self._window and now - self._window[0] > 1.0:
            self._window.popleft()
        self._window.append(now)
        if len(self._window) <= self.rate_limit:
            return False
        self._rejections.append(now)
        while self._rejections and now - self._rejections[0] > 60:
            self._rejections.popleft()
        if len(self._rejections) >= self.block_after:
            self.blocked = True
        return True

    def _fault(self, request: web.Request, *, after: bool) -> Fault | None:
        for fault in self._faults:
            if fault.after == after and (fault.path is None or request.path.startswith(fault.path)) and fault.method in (None, request.method):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    @staticmethod
    def _fault_response(fault: Fault) -> web.Response:
        if fault.status == 429:
            return web.Response(text=HTML_429, status=429, content_type="text/html")
        if fault.status == 403:
            return web.Response(text=HTML_403, status=403, content_type="text/html")
        return web.Response(text=NGINX_PAGE.format(status=fault.status), status=fault.status, content_type="text/html")

    def _authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip()
        return header.startswith("Bearer ") and self._access.get(token, 0) > time.time()

    # -------------------------------------------------------------- handlers
    async def _token(self, request: web.Request) -> web.Response:
        body = await request.json()
        if (body.get("client_id"), body.get("client_secret")) != (self.client_id, self.client_secret):
            return self._oauth_error("Client authentication failed")
        grant = body.get("grant_type")
        if grant == "authorization_code":
            if self._codes.pop(body.get("code"), 0) < time.time():
                return self._oauth_error("Authorization code has expired")
        elif grant == "refresh_token":
            if body.get("refresh_token") not in self._refresh:
                return self._oauth_error("Token has been revoked")
            self._refresh.discard(body["refresh_token"])
            self.refreshes += 1
        else:
            return self._oauth_error("Unsupported grant type")
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self._access[access] = time.time() + ACCESS_TTL
        self._refresh.add(refresh)
        return _json({"token_type": "Bearer", "expires_in": ACCESS_TTL, "server_time": int(time.time()),
                      "access_token": access, "refresh_token": refresh}, content_type="application/json")

    @staticmethod
    def _oauth_error(hint: str) -> web.Response:
        return _json({"hint": hint, "title": "Некорректный запрос", "type": "https://developers.amocrm.ru/v3/errors/OAuthProblemJson",
                      "status": 401, "detail": "В запросе отсутствует ряд параметров или параметры невалидны"}, 401, "application/problem+json")

    def _list(self, request: web.Request, entity: str, items: list[dict[str, Any]]) -> web.Response:
        """One page of a list (``page``, ``limit`` ≤ 250) or 204 when it is empty."""
        page = max(int(request.query.get("page", 1)), 1)
        limit = min(max(int(request.query.get("limit", 50)), 1), 250)
        chunk = items[(page - 1) * limit: page * limit]
        if not chunk:
            return web.Response(status=204)
        links = {"self": {"href": f"{self.base_url}{request.path}?page={page}"}}
        if page * limit < len(items):
            links["next"] = {"href": f"{self.base_url}{request.path}?page={page + 1}"}
        return _json({"_page": page, "_links": links, "_embedded": {entity: chunk}})

    async def _account(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = {"id": self.account.id, "name": "Sandbox", "subdomain": self.account.subdomain, "country": "RU",
                                "is_loss_reason_enabled": True}
        if "amojo_id" in request.query.get("with", "").split(","):
            body["amojo_id"] = self.chats.amojo_id
        embedded: dict[str, Any] = {}
        if "datetime_settings" in request.query.get("with", "").split(","):
            embedded["datetime_settings"] = self.account.datetime_settings()
        if "task_types" in request.query.get("with", "").split(","):
            embedded["task_types"] = list(self.account.task_types.values())
        if embedded:
            body["_embedded"] = embedded
        return _json(body)

    def _listing(self, entity: str, items: Any) -> Any:
        async def handle(request: web.Request) -> web.Response:
            return self._list(request, entity, list(items()))
        return handle

    async def _pipelines(self, request: web.Request) -> web.Response:
        pipelines = [{**p, "account_id": self.account.id, "_embedded": {"statuses": self.account.pipeline_statuses(p["id"])}}
                     for p in self.account.pipelines.values()]
        return _json({"_total_items": len(pipelines), "_embedded": {"pipelines": pipelines}})

    async def _contacts(self, request: web.Request) -> web.Response:
        with_leads = "leads" in request.query.get("with", "").split(",")
        found = self.account.find_contacts(request.query.get("query"))
        return self._list(request, "contacts", [self.account.contact_json(c, with_leads=with_leads) for c in found])

    async def _contact(self, request: web.Request) -> web.Response:
        contact = self.account.contacts.get(int(request.match_info["id"]))
        if contact is None:
            return web.Response(status=204)
        return _json(self.account.contact_json(contact, with_leads="leads" in request.query.get("with", "")))

    async def _leads(self, request: web.Request) -> web.Response:
        q = request.query
        order = next(((key[6:-1], value) for key, value in q.items() if key.startswith("order[")), None)
        found = self.account.find_leads(
            query=q.get("query"), ids=_ints(q, "filter[id]"),
            updated_from=int(q["filter[updated_at][from]"]) if "filter[updated_at][from]" in q else None,
            updated_to=int(q["filter[updated_at][to]"]) if "filter[updated_at][to]" in q else None, order=order,
        )
        with_contacts = "contacts" in q.get("with", "").split(",")
        return self._list(request, "leads", [self.account.lead_json(lead, with_contacts=with_contacts) for lead in found])

    async def _lead(self, request: web.Request) -> web.Response:
        lead = self.account.leads.get(int(request.match_info["id"]))
        if lead is None:
            return web.Response(status=204)
        return _json(self.account.lead_json(lead, with_contacts="contacts" in request.query.get("with", "")))

    def _batch(self, entity: str, operation: Any) -> Any:
        async def handle(request: web.Request) -> web.Response:
            results = operation(await self._body(request))
            return _json({"_links": {"self": {"href": self.base_url + request.path}}, "_embedded": {entity: results}})
        return handle

    async def _link(self, request: web.Request) -> web.Response:
        links = self.account.link(int(request.match_info["id"]), await self._body(request))
        return _json({"_total_items": len(links), "_embedded": {"links": links}})

    async def _complex(self, request: web.Request) -> web.Response:
        return _json(self.account.add_complex(await self._body(request)))

    @staticmethod
    async def _body(request: web.Request) -> Any:
        try:
            return await request.json()
        except ValueError:
            raise ApiError(400, "Request body is not valid JSON") from None

    async def _notes(self, request: web.Request) -> web.Response:
        q = request.query
        entity_ids = [int(request.match_info["id"])] if "id" in request.match_info else _ints(q, "filter[entity_id]")
        found = self.account.find_notes(entity_ids=entity_ids, note_type=q.get("filter[note_type]"),
                                        order_desc=q.get("order[id]") == "desc")
        return self._list(request, "notes", [self.account.note_json(n) for n in found])

    async def _tasks(self, request: web.Request) -> web.Response:
        q = request.query
        completed = q.get("filter[is_completed]")
        found = self.account.find_tasks(
            entity_ids=_ints(q, "filter[entity_id]"), is_completed=None if completed is None else completed == "1",
            responsible=int(q["filter[responsible_user_id]"]) if "filter[responsible_user_id]" in q else None,
            task_types=_ints(q, "filter[task_type]"),
            updated_from=int(q["filter[updated_at][from]"]) if "filter[updated_at][from]" in q else None,
            order_desc=q.get("order[id]") == "desc",
        )
        return self._list(request, "tasks", found)

    async def _seen_requests(self, request: web.Request) -> web.Response:
        seen = [{"at": r.at, "method": r.method, "path": r.path, "status": r.status} for r in self.requests]
        return _json(seen, content_type="application/json")

    async def _seen_notes(self, request: web.Request) -> web.Response:
        return _json([{"id": n["id"], "entity_id": n["entity_id"], "text": n["params"].get("text"), "at": self.note_at.get(n["id"])}
                      for n in self.account.notes.values()], content_type="application/json")

    # ------------------------------------------------------------- lifecycle
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = self.chats.base_url = f"http://{host}:{bound}"
        return self.base_url

    async def close(self) -> None:
        for held in self._holds:
            held.release.set()
        if self._runner is not None:
            await self._runner.cleanup()
