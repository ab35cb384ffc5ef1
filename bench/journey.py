"""Lead-journey benchmark: ``python -m bench.journey [--leads 200] [--in-flight 50 | --rate 100] [--greetings-only]``.

The real service runs against the sandbox Bot API started in a separate process (as Telegram
is remote), on a fresh SQLite file, and measures:
- greeting latency over ``--leads`` website-quiz buyers opening the bot, timed from the outside: from the
  moment the buyer's ``/start`` is handed to the Bot API (stamped by the buyers' driver just before it
  asks the sandbox to queue the update, so it includes the wait for the bot's next ``getUpdates``) to the
  bot's ``sendMessage`` arriving at the Bot API (stamped by the sandbox; both on the machine's one
  monotonic clock). Buyers are driven from their own process with no connection cap
  (``TCPConnector(limit=0)``), either ``--in-flight`` N at a time (the next buyer starts when one is
  greeted) or open-loop at ``--rate`` arrivals per second (nobody waits for anybody); the benchmark prints
  what it offered and what it got (greetings per second), and the load average;
- the memory of the service (this process, which runs it, and its render workers: RSS and PSS) idle after the start
  and after the greetings;
- cached resend: a tap on «catalogue» (PDF already uploaded) to ``sendDocument`` by ``file_id``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from bench.common import memory, percentile
from bot.app import App
from bot.config import load_settings
from bot.logs import setup_logging
from bot.sandbox.balancer import free_port

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


async def website_quizzes(base_url: str, sandbox: RemoteSandbox, leads: int) -> list[str]:
    """Post ``leads`` Marquiz webhooks to the service at ``base_url``; the start payload of each (its buyer is added to the sandbox)."""
    payloads = []
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as site:
        for index in range(leads):
            body = {**QUIZ, "contacts": {"name": f"Покупатель {index}", "phone": f"7999{index:07d}"}, "created": f"bench-{index}"}
            response = await site.post(f"/webhooks/marquiz/{SECRET}", content=json.dumps(body, ensure_ascii=False),
                                       headers={"Content-Type": "application/json"})
            payloads.append(response.json()["start_link"].split("start=", 1)[1])
            await sandbox("add_user", user_id=FIRST_USER + index, first_name=f"Покупатель {index}")
    return payloads


async def drive(base_url: str, payloads: list[str], in_flight: int, rate: float | None, stamps_file: str) -> None:
    """The buyers: each sends ``/start <payload>``; ``in_flight`` at a time (each waits for its greeting), or open-loop
    at ``rate`` per second. Writes when each ``/start`` was handed over (``time.perf_counter``, the machine's monotonic
    clock) to ``stamps_file``. Runs in its own process (``python -m bench.journey --drive``): no CPU from the bot."""
    sandbox = RemoteSandbox(base_url, None)
    await sandbox.http.close()
    sandbox.http = aiohttp.ClientSession(base_url=base_url, timeout=aiohttp.ClientTimeout(total=120),
                                         connector=aiohttp.TCPConnector(limit=0))
    gate = asyncio.Semaphore(in_flight if rate is None else len(payloads))
    stamps: dict[int, float] = {}

    async def buyer(index: int) -> None:
        if rate is not None:
            await asyncio.sleep(index / rate)
        async with gate:
            stamps[FIRST_USER + index] = time.perf_counter()
            await sandbox("send_text", user_id=FIRST_USER + index, text=f"/start {payloads[index]}")
            await sandbox("wait_for_messages", chat_id=FIRST_USER + index, count=1, timeout=120)

    try:
        await asyncio.gather(*(buyer(index) for index in range(len(payloads))))
    finally:
        await sandbox.http.close()
    Path(stamps_file).write_text(json.dumps(stamps))


async def greetings(sandbox: RemoteSandbox, payloads: list[str], in_flight: int, rate: float | None) -> tuple[list[float], float]:
    """Seconds from each ``/start`` handed to the Bot API to its greeting's ``sendMessage``; greetings per second."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as file, tempfile.NamedTemporaryFile("r", suffix=".json") as stamps:
        json.dump(payloads, file)
        file.flush()
        driver = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.journey", "--drive", sandbox.base_url, file.name, stamps.name,
            "--in-flight", str(in_flight), *(["--rate", str(rate)] if rate else []),
        )
        if await driver.wait():
            raise RuntimeError("the buyers' driver failed")
        handed = {int(user): at for user, at in json.loads(Path(stamps.name).read_text()).items()}
    sent: dict[int, float] = {}
    for call in await sandbox.calls("sendMessage"):
        sent.setdefault(int(call["chat_id"]), call["started_at"])
    users = range(FIRST_USER, FIRST_USER + len(payloads))
    span = max(sent[user] for user in users) - min(handed[user] for user in users)
    return [sent[user] - handed[user] for user in users], len(payloads) / span


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


async def main(leads: int, in_flight: int, database_url: str | None = None, rate: float | None = None,
               greetings_only: bool = False) -> dict[str, Any]:
    setup_logging("WARNING")
    sandbox = await RemoteSandbox.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-journey-") as workdir:
            settings = load_settings(
                _env_file=None, BOT_TOKEN=TOKEN, TELEGRAM_API_URL=sandbox.base_url, WEBHOOK_SECRET=SECRET, HTTP_PORT=0,
                DATABASE_URL=database_url or f"sqlite+aiosqlite:///{Path(workdir) / 'bench.sqlite3'}", DATA_DIR=workdir,
                # greetings alone are timed in the steady state: not beside the start-up drawing of every catalogue
                # body in the render worker (a job of minutes after each catalogue version, timed by bench.catalog)
                CATALOG_PRERENDER=not greetings_only,
            )
            async with App(settings).running() as app:
                idle = memory(os.getpid(), leave_out=(sandbox.process.pid,))
                greeting, per_second = await greetings(sandbox, await website_quizzes(f"http://127.0.0.1:{app.http_port}", sandbox, leads), in_flight, rate)
                after = memory(os.getpid(), leave_out=(sandbox.process.pid,))
                resend = None if greetings_only else await cached_resends(sandbox, 20)
    finally:
        await sandbox.close()
    result = {
        "leads": leads, "offered": f"{rate}/s open-loop" if rate else f"{in_flight} in flight",
        "database": (database_url or "sqlite").split(":")[0], "load_average": [round(x, 2) for x in os.getloadavg()],
        "greeting_ms": {f"p{p}": round(percentile(greeting, p / 100) * 1000, 1) for p in (50, 95, 99)},
        "got_greetings_per_s": round(per_second, 1),
        "memory_idle": idle, f"memory_after_{leads}_greetings": after,
    }
    if greetings_only:
        return result
    return {
        **result,
        "cached_resend_ms": {"p50": round(percentile(resend, 0.5) * 1000, 1), "max": round(max(resend) * 1000, 1)},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=200)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--rate", type=float, help="open-loop arrivals per second instead of --in-flight")
    parser.add_argument("--greetings-only", action="store_true", help="skip the catalogue measurements")
    parser.add_argument("--database-url", help="an empty database to use instead of a fresh SQLite file")
    parser.add_argument("--drive", nargs=3, metavar=("SANDBOX_URL", "PAYLOADS_JSON", "STAMPS_JSON"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.drive:
        url, payload_file, stamps_file = options.drive
        asyncio.run(drive(url, json.loads(Path(payload_file).read_text()), options.in_flight, options.rate, stamps_file))
        sys.exit(0)
    result = asyncio.run(main(options.leads, options.in_flight, options.database_url, options.rate, options.greetings_only))
    print(json.dumps(result, ensure_ascii=False, indent=2))
    print(f"targets: greeting p99 < 300 ms (got {result['greeting_ms']['p99']}), ≥ 500 greetings/s sustained "
          f"(got {result['got_greetings_per_s']})" + ("" if options.greetings_only else
          f", cached resend < 50 ms (got {result['cached_resend_ms']['p50']}); the cold catalogue tap: python -m bench.catalog"))
