"""Lead-journey benchmark: ``python -m bench.journey [--leads 200] [--in-flight 50]``.

The real service runs against the sandbox Bot API started in a separate process (as Telegram
is remote), on a fresh SQLite file, and measures:
- greeting latency over ``--leads`` website-quiz buyers opening the bot, ``--in-flight`` at a
  time: from the ``getUpdates`` response that delivered the buyer's ``/start`` to the bot's
  ``sendMessage`` arriving at the Bot API (both stamped by the sandbox on one monotonic clock);
- cached resend: a tap on «catalogue» (PDF already uploaded) to ``sendDocument`` by ``file_id``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from bench.common import percentile
from bot.app import App
from bot.config import load_settings
from bot.logs import setup_logging

TOKEN = "424242:BENCH"
SECRET = "bench-webhook-secret-0123456789"
FIRST_USER = 500_000
QUIZ = {
    "quiz": {"id": "bench"},
    "answers": [
        {"q": "Какая категория товаров вас интересует?", "a": ["Обувь", "Женская одежда"]},
        {"q": "Какой объём закупки планируете?", "a": "100–300 тыс ₽"},
        {"q": "Где вы продаёте?", "a": "Маркетплейсы"},
        {"q": "Ваш город доставки?", "a": "Казань"},
    ],
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RemoteSandbox:
    """The sandbox Bot API in a child process, driven over its JSON control API."""

    def __init__(self, base_url: str, process: asyncio.subprocess.Process | None) -> None:
        self.base_url = base_url
        self.process = process
        self.http = aiohttp.ClientSession(base_url=base_url, timeout=aiohttp.ClientTimeout(total=120))

    @classmethod
    async def start(cls) -> RemoteSandbox:
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.sandbox", "--port", str(port), "--token", TOKEN, stdout=asyncio.subprocess.PIPE
        )
        base_url = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
        return cls(base_url, process)

    async def __call__(self, action: str, **arguments: Any) -> Any:
        async with self.http.post(f"/sandbox/{action}", json=arguments) as response:
            answer = await response.json()
        if not answer["ok"]:
            raise RuntimeError(f"sandbox {action}: {answer['error']}")
        return answer["result"]

    async def calls(self, method: str) -> list[dict[str, Any]]:
        async with self.http.get("/sandbox/calls", params={"method": method}) as response:
            return (await response.json())["result"]

    async def close(self) -> None:
        await self.http.close()
        self.process.terminate()
        await self.process.wait()


async def website_quizzes(app: App, sandbox: RemoteSandbox, leads: int) -> list[str]:
    """Post ``leads`` Marquiz webhooks; the start payload of each (its buyer is added to the sandbox)."""
    payloads = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", timeout=60) as site:
        for index in range(leads):
            body = {**QUIZ, "contacts": {"name": f"Покупатель {index}", "phone": f"7999{index:07d}"}, "created": f"bench-{index}"}
            response = await site.post(f"/webhooks/marquiz/{SECRET}", content=json.dumps(body, ensure_ascii=False),
                                       headers={"Content-Type": "application/json"})
            payloads.append(response.json()["start_link"].split("start=", 1)[1])
            await sandbox("add_user", user_id=FIRST_USER + index, first_name=f"Покупатель {index}")
    return payloads


async def drive(base_url: str, payloads: list[str], in_flight: int) -> None:
    """The buyers: each sends ``/start <payload>`` and waits for the greeting, ``in_flight`` at a time.
    Runs in its own process (``python -m bench.journey --drive``) so it takes no CPU from the bot."""
    sandbox = RemoteSandbox(base_url, None)
    gate = asyncio.Semaphore(in_flight)

    async def buyer(index: int) -> None:
        async with gate:
            await sandbox("send_text", user_id=FIRST_USER + index, text=f"/start {payloads[index]}")
            await sandbox("wait_for_messages", chat_id=FIRST_USER + index, count=1, timeout=60)

    try:
        await asyncio.gather(*(buyer(index) for index in range(len(payloads))))
    finally:
        await sandbox.http.close()


async def greetings(sandbox: RemoteSandbox, payloads: list[str], in_flight: int) -> list[float]:
    """Seconds from each ``/start`` delivered to the bot to its greeting's ``sendMessage``."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
        json.dump(payloads, file)
        file.flush()
        driver = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.journey", "--drive", sandbox.base_url, file.name, "--in-flight", str(in_flight)
        )
        if await driver.wait():
            raise RuntimeError("the buyers' driver failed")
    delivered: dict[int, float] = {}
    for call in await sandbox.calls("getUpdates"):
        updates = json.loads(call["result"]) if isinstance(call["result"], str) else call["result"] or []
        for update in updates:
            sender = (update.get("message") or {}).get("from", {}).get("id")
            if sender is not None:
                delivered.setdefault(sender, call["finished_at"])
    sent: dict[int, float] = {}
    for call in await sandbox.calls("sendMessage"):
        sent.setdefault(int(call["chat_id"]), call["started_at"])
    return [sent[user] - delivered[user] for user in range(FIRST_USER, FIRST_USER + len(payloads))]


async def cached_resends(sandbox: RemoteSandbox, count: int) -> list[float]:
    """Seconds from a tap on «catalogue» to ``sendDocument`` issued, once the PDF has a ``file_id``."""
    times = []
    for attempt in range(count + 1):
        greeting = (await sandbox("messages", chat_id=FIRST_USER, from_bot=True))[0]
        data = next(b["callback_data"] for row in greeting["reply_markup"]["inline_keyboard"] for b in row if "каталог" in b["text"])
        documents = len(await sandbox.calls("sendDocument"))
        since = time.perf_counter()
        await sandbox("click", user_id=FIRST_USER, message=greeting, callback_data=data)
        await sandbox("wait_for_messages", chat_id=FIRST_USER, count=1 + 2 * (attempt + 1), timeout=60)
        call = (await sandbox.calls("sendDocument"))[documents]
        if attempt:  # the first tap renders and uploads
            times.append(call["started_at"] - since)
    return times


async def main(leads: int, in_flight: int, database_url: str | None = None) -> dict[str, Any]:
    setup_logging("WARNING")
    sandbox = await RemoteSandbox.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-journey-") as workdir:
            settings = load_settings(
                _env_file=None, BOT_TOKEN=TOKEN, TELEGRAM_API_URL=sandbox.base_url, WEBHOOK_SECRET=SECRET, HTTP_PORT=0,
                DATABASE_URL=database_url or f"sqlite+aiosqlite:///{Path(workdir) / 'bench.sqlite3'}", DATA_DIR=workdir,
            )
            async with App(settings).running() as app:
                greeting = await greetings(sandbox, await website_quizzes(app, sandbox, leads), in_flight)
                resend = await cached_resends(sandbox, 20)
    finally:
        await sandbox.close()
    return {
        "leads": leads, "in_flight": in_flight, "database": (database_url or "sqlite").split(":")[0],
        "greeting_ms": {f"p{p}": round(percentile(greeting, p / 100) * 1000, 1) for p in (50, 95, 99)},
        "cached_resend_ms": {"p50": round(percentile(resend, 0.5) * 1000, 1), "max": round(max(resend) * 1000, 1)},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=200)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--database-url", help="an empty database to use instead of a fresh SQLite file")
    parser.add_argument("--drive", nargs=2, metavar=("SANDBOX_URL", "PAYLOADS_JSON"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.drive:
        url, payload_file = options.drive
        asyncio.run(drive(url, json.loads(Path(payload_file).read_text()), options.in_flight))
        sys.exit(0)
    result = asyncio.run(main(options.leads, options.in_flight, options.database_url))
    print(json.dumps(result, ensure_ascii=False, indent=2))
    print(f"targets: greeting p99 < 300 ms (got {result['greeting_ms']['p99']}), "
          f"cached resend < 50 ms (got {result['cached_resend_ms']['p50']}); the cold catalogue tap: python -m bench.catalog")
