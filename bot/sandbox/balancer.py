"""A load balancer in front of several instances (tests, benchmarks): each request to the next instance that answers.

Round robin over ``ports`` (which may be changed while it runs); an instance that refuses the connection or drops
it is skipped, as a proxy's health check would, and 502 when none answers.
"""
from __future__ import annotations

import itertools
import socket

import aiohttp
from aiohttp import web


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Balancer:
    """``async with Balancer(ports) as balancer``: listens on ``127.0.0.1:balancer.port``."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.port = free_port()
        self._turns = itertools.count()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        body = await request.read()
        for _ in range(len(self.ports)):
            port = self.ports[next(self._turns) % len(self.ports)]
            try:
                async with self._session.post(f"http://127.0.0.1:{port}{request.path_qs}", data=body, headers=request.headers) as answer:
                    return web.Response(status=answer.status, body=await answer.read(), content_type=answer.content_type)
            except aiohttp.ClientConnectionError:
                continue
        return web.Response(status=502)

    async def __aenter__(self) -> Balancer:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        app = web.Application()
        app.router.add_post("/{path:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._runner is not None and self._session is not None
        await self._runner.cleanup()
        await self._session.close()
