"""The HTTP face of the sandbox: Bot API routes, file downloads and the control API mount."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from .core import CallRecord, ConnectionDrop, Core, ThrottleRecord
from .errors import ApiError, RateLimited, not_found, unauthorized
from .files import MAX_UPLOAD_SIZE, MB
from .methods import RawJson, method_table
from .params import Params, read_multipart, read_request

FILE_DOWNLOAD = "file"  # the name fail_next/outage know a download from /file/bot<token>/<path> by

log = logging.getLogger(__name__)
ControlHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _chat_key(value: Any) -> int | str | None:
    """``chat_id`` as recorded: an int when it looks like one."""
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return value
    return value


def _dropped(request: web.Request) -> web.Response:
    """No answer: the connection is closed without one (aiohttp ignores the response returned, its client is gone)."""
    if request.transport is not None:
        request.transport.close()
    return _json_response(502, "")


def _json_response(status: int, body: str) -> web.Response:
    return web.Response(status=status, text=body, content_type="application/json")


class ApiServer:
    """aiohttp application serving ``/bot<token>/<method>``, ``/file/bot<token>/<path>`` and ``/sandbox/...``."""

    def __init__(self, core: Core, control: ControlHandler) -> None:
        self.core = core
        self.methods = method_table(core)
        self.app = web.Application(client_max_size=MAX_UPLOAD_SIZE + MB)
        self.app.router.add_route("*", "/bot{token}/{method}", self._api)
        self.app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        self.app.router.add_route("*", "/sandbox/{action}", control)
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> str:
        """Listen on ``host:port`` (0 = any free port); return the base URL."""
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://{host}:{bound_port}"

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- Bot API -------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        if request.match_info["token"] != self.core.token:
            return _json_response(401, json.dumps(unauthorized().to_dict()))
        name = request.match_info["method"]
        try:
            params = await read_request(request)
        except ApiError as error:  # unreadable or oversized request
            self.core.record(CallRecord(name, {}, None, started, time.perf_counter(), False, error.error_code,
                                        error.description))
            return _json_response(error.error_code, json.dumps(error.to_dict()))
        try:
            status, body = await self.call(name, params, started)
        except ConnectionDrop:
            return _dropped(request)
        return _json_response(status, body)

    async def call(self, name: str, params: Params, started: float | None = None) -> tuple[int, str]:
        """Run Bot API method ``name``; record the call; return ``(http_status, json_body)``, or raise
        :class:`ConnectionDrop` for a call that gets no answer (``drop_next``; recorded with ``dropped``)."""
        started = time.perf_counter() if started is None else started
        method = self.methods.get(name.lower())
        canonical = method.name if method is not None else name
        chat_id = _chat_key(params.raw("chat_id"))
        result: Any = None
        drop: ConnectionDrop | None = None
        try:
            if method is None:
                raise not_found()
            delay = self.core.delay_for(canonical)
            if delay:
                await asyncio.sleep(delay)
            injected = self.core.faults.take(canonical, chat_id)
            if isinstance(injected, ConnectionDrop):
                drop = injected
            elif injected is not None:
                raise injected
            if drop is None or drop.executed:
                result = await method.handler(params)
        except Exception as exc:
            error = exc if isinstance(exc, ApiError) else self._internal_error(canonical, exc)
            status, body = error.error_code, json.dumps(error.to_dict(), ensure_ascii=False)
            finished = time.perf_counter()
            if error.retry_after is not None:
                scope = error.scope if isinstance(error, RateLimited) else "injected"
                self.core.throttles.append(ThrottleRecord(canonical, chat_id, error.retry_after, scope, finished))
            self.core.record(CallRecord(canonical, params.for_record(), chat_id, started, finished, False,
                                        error.error_code, error.description, dropped=drop is not None))
            if drop is not None:
                raise drop
            return status, body
        if drop is not None and not drop.executed:
            self.core.record(CallRecord(canonical, params.for_record(), chat_id, started, time.perf_counter(), False,
                                        description=str(drop), dropped=True))
            raise drop
        if isinstance(result, RawJson):
            body = '{"ok":true,"result":' + result + "}"
        else:
            body = json.dumps({"ok": True, "result": result}, ensure_ascii=False)
        self.core.record(CallRecord(canonical, params.for_record(), chat_id, started, time.perf_counter(), True,
                                    result=result, dropped=drop is not None))
        if drop is not None:
            raise drop
        return 200, body

    @staticmethod
    def _internal_error(method: str, exc: Exception) -> ApiError:
        """A sandbox bug: answer 500 with the cause, so the failing test shows it."""
        log.exception("sandbox failed in %s", method)
        return ApiError(500, f"Internal Server Error: sandbox bug in {method}: {exc!r}")

    async def webhook_reply(self, response: aiohttp.ClientResponse) -> None:
        """Execute a Bot API call the bot returned in its webhook response, as Telegram does."""
        content_type = response.content_type
        try:
            if content_type.startswith("multipart/"):
                params = await read_multipart(aiohttp.MultipartReader(response.headers, response.content))
            elif content_type == "application/json":
                data = await response.json()
                if not isinstance(data, dict):
                    return
                params = Params(data)
            else:
                return
        except (ApiError, ValueError, aiohttp.ClientError):
            return  # Telegram ignores a webhook answer it cannot read
        name = params.values.pop("method", None)
        if name:
            try:
                await self.call(str(name), params)
            except ConnectionDrop:
                pass  # nobody waits for the answer to a webhook reply

    # -- files ---------------------------------------------------------------------

    async def _file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.core.token:
            return _json_response(401, json.dumps(unauthorized().to_dict()))
        injected = self.core.faults.take(FILE_DOWNLOAD, None)  # the file server down, or a file_path past its hour
        if isinstance(injected, ConnectionDrop):
            return _dropped(request)
        if injected is not None:
            return _json_response(injected.error_code, json.dumps(injected.to_dict()))
        stored = self.core.files.by_path(request.match_info["path"])
        if stored is None:
            return _json_response(404, json.dumps(not_found().to_dict()))
        return web.Response(body=stored.data, content_type=stored.mime_type or "application/octet-stream")
