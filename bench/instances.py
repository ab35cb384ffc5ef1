"""One and two instances behind one webhook: ``python -m bench.instances --database-url URL --redis-url URL
[--leads 1000] [--rate 200] [--instances 1 2]``.

For each instance count, a fresh PostgreSQL database (created next to ``--database-url``'s, dropped after) and
that many real ``optobot run`` processes (role ``all``, sharing Redis) behind a round-robin load balancer
(:mod:`bot.sandbox.balancer`); the sandbox Bot API, in its own process, delivers updates to the balancer's
webhook URL, which the elected instance registered. ``--leads`` website-quiz buyers then open the bot
open-loop at ``--rate`` arrivals per second (the driver of :mod:`bench.journey`, in its own process), and the
benchmark prints, per instance count, the updates handled per second (greetings sent / the span from the
first ``/start`` to the last greeting) and the greeting latency (``/start`` handed to the Bot API → its
``sendMessage`` arriving), with the load average.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench.common import percentile, ready
from bench.journey import SECRET, TOKEN, RemoteSandbox, greetings, website_quizzes
from bot.config import PROJECT_DIR
from bot.db.session import open_database
from bot.sandbox.balancer import Balancer, free_port


@asynccontextmanager
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """A new empty database on ``server_url``'s server (its URL), dropped at the end."""
    name = f"optobot_bench_{uuid.uuid4().hex[:10]}"
    admin = open_database(server_url)

    async def run(sql: str) -> None:
        async with admin.engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text(sql))

    await run(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        await run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def measure(count: int, server_url: str, redis_url: str, leads: int, rate: float, workdir: Path) -> dict[str, Any]:
    sandbox = await RemoteSandbox.start()
    ports = [free_port() for _ in range(count)]
    try:
        async with fresh_database(server_url) as database_url, Balancer(ports) as balancer:
            processes: list[asyncio.subprocess.Process] = []
            try:
                for index, port in enumerate(ports):
                    env = {**os.environ, "BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": sandbox.base_url, "DATABASE_URL": database_url,
                           "REDIS_URL": redis_url, "PUBLIC_URL": f"http://127.0.0.1:{balancer.port}", "WEBHOOK_SECRET": SECRET,
                           "HTTP_PORT": str(port), "DATA_DIR": str(workdir / f"{count}-{index}"), "RENDER_WORKERS": "1",
                           "RENDER_WARM": "0", "CATALOG_PRERENDER": "false", "REPORT_SCHEDULE": "off", "LOG_LEVEL": "WARNING",
                           "PYTHONPATH": str(PROJECT_DIR)}
                    processes.append(await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "run", cwd=workdir, env=env))
                    await ready(f"http://127.0.0.1:{port}/readyz", processes[-1])  # one after the other: the first migrates the database
                while not await sandbox.calls("setWebhook"):
                    await asyncio.sleep(0.2)
                payloads = await website_quizzes(f"http://127.0.0.1:{ports[0]}", sandbox, leads)
                greeting, per_second = await greetings(sandbox, payloads, len(payloads), rate)
            finally:
                for process in processes:
                    if process.returncode is None:
                        process.terminate()
                for process in processes:
                    await process.wait()
    finally:
        await sandbox.close()
    return {
        "instances": count, "leads": leads, "offered_per_s": rate, "handled_per_s": round(per_second, 1),
        "greeting_ms": {f"p{p}": round(percentile(greeting, p / 100) * 1000, 1) for p in (50, 95, 99)},
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


async def main(server_url: str, redis_url: str, leads: int, rate: float, counts: list[int]) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="bench-instances-") as workdir:
        return [await measure(count, server_url, redis_url, leads, rate, Path(workdir)) for count in counts]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="a PostgreSQL URL whose server gets a fresh database per run")
    parser.add_argument("--redis-url", required=True, help="the Redis the instances share")
    parser.add_argument("--leads", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop /start arrivals per second")
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 2])
    options = parser.parse_args()
    for result in asyncio.run(main(options.database_url, options.redis_url, options.leads, options.rate, options.instances)):
        print(json.dumps(result, ensure_ascii=False))
