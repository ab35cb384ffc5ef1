"""Benchmark of the cold catalogue tap: ``python -m bench.catalog [--products 48 200] [--taps 20]``.

For each catalogue size, a real ``optobot run`` (its own process and render pool: ``RENDER_WORKERS=2``,
``RENDER_WARM=1`` (the default), ``CATALOG_PRERENDER=off``) runs against the sandbox Bot API in another process. Buyers come
from the website quiz (shoes and women's clothing, 100–300 k ₽, Kazan), open the bot and tap «Прислать
каталог». Every buyer is new, so each tap draws that buyer's cover; the catalogue they get holds every
product of the folder (``CATALOG_MAX_PER_CATEGORY=1000``). Timed, on the machine's monotonic clock: from just before the bench asks the
sandbox to press the button to the sandbox having received the bot's ``sendDocument`` (the upload read and
answered). Measured:

- first buyer of the variant: the body is not rendered yet (as for the first buyer after a new catalogue
  version when the prerender has not reached their variant): body + cover; then two buyers tap at once,
  untimed, which starts the second worker;
- one at a time: ``--taps`` never-seen buyers, each after the previous got the PDF;
- 10 at once: three rounds of 10 never-seen buyers pressing in the same instant;
- cached resend: a buyer who already has it taps again (sent by ``file_id``);
- the PDF's size and pages, the load average, and the memory of ``optobot run`` (RSS and PSS of the
  service and its workers, summed): idle after the start, and after all those renders (≥ 50);
- the CPU time of what a cold tap costs a worker (the cover drawn, composed with the body), in this
  process's thread, which other load on the machine does not inflate.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import yaml
from pypdf import PdfReader

from bench.common import memory, percentile, ready
from bench.journey import QUIZ, SECRET, TOKEN, RemoteSandbox, free_port
from bot.catalog.render import CatalogRequest, compose, render_body, render_cover
from bot.config import DEFAULT_CATALOG_DIR

TARGET_P95_S = 0.3
TARGET_IDLE_MB = 350
FIRST_USER = 700_000


def catalogue_of(size: int, folder: Path) -> Path:
    """A copy of the sample catalogue with ``size`` products (the sample's, repeated under new SKUs)."""
    shutil.copytree(DEFAULT_CATALOG_DIR, folder)
    data = yaml.safe_load((folder / "catalog.yaml").read_text(encoding="utf-8"))
    sample = data["products"]
    data["products"] = [dict(sample[i % len(sample)], sku=f"{sample[i % len(sample)]['sku']}-{i // len(sample)}")
                        if i >= len(sample) else sample[i] for i in range(size)]
    (folder / "catalog.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return folder


async def settled(pid: int, processes: int, timeout: float = 120) -> dict[str, float]:
    """:func:`memory` once ``processes`` run and their RSS has not moved by 1 MB for 2 s (the workers started)."""
    deadline, previous = time.monotonic() + timeout, None
    while True:
        current = memory(pid)
        if current["processes"] == processes and previous and abs(current["rss_mb"] - previous["rss_mb"]) < 1:
            return current
        if time.monotonic() > deadline:
            raise RuntimeError(f"the service did not settle: {current}")
        previous = current if current["processes"] == processes else None
        await asyncio.sleep(2)


@asynccontextmanager
async def service(sandbox: RemoteSandbox, catalog: Path, workdir: Path) -> AsyncIterator[tuple[str, int]]:
    """``optobot run`` in a child process: its base URL and pid."""
    port = free_port()
    env = {**os.environ, "BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": sandbox.base_url, "WEBHOOK_SECRET": SECRET,
           "HTTP_PORT": str(port), "DATA_DIR": str(workdir / "data"), "CATALOG_DIR": str(catalog),
           "DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'bench.sqlite3'}", "LOG_LEVEL": "WARNING",
           "RENDER_WORKERS": "2", "CATALOG_PRERENDER": "off", "REPORT_SCHEDULE": "off",
           "CATALOG_MAX_PER_CATEGORY": "1000"}
    with (workdir / "optobot.log").open("w") as log:
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "run", cwd=workdir, env=env,
                                                       stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        await ready(f"{base}/healthz", process, workdir / "optobot.log")
        yield base, process.pid
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


class Buyers:
    """New buyers: website quiz → ``/start`` → greeting (untimed), then taps on «Прислать каталог»."""

    def __init__(self, sandbox: RemoteSandbox, base: str) -> None:
        self.sandbox = sandbox
        self.base = base
        self.next = FIRST_USER
        self.greetings: dict[int, dict[str, Any]] = {}

    async def arrive(self, count: int) -> list[int]:
        users = list(range(self.next, self.next + count))
        self.next += count
        async with httpx.AsyncClient(base_url=self.base, timeout=60) as site:
            for user in users:
                body = {**QUIZ, "contacts": {"name": f"Покупатель {user}", "phone": f"7998{user:07d}"}, "created": f"c-{user}"}
                answer = await site.post(f"/webhooks/marquiz/{SECRET}", json=body)
                payload = answer.json()["start_link"].split("start=", 1)[1]
                await self.sandbox("add_user", user_id=user, first_name=f"Покупатель {user}", last_name="Тестов")
                await self.sandbox("send_text", user_id=user, text=f"/start {payload}")
                await self.sandbox("wait_for_messages", chat_id=user, count=1, timeout=60)
                self.greetings[user] = (await self.sandbox("messages", chat_id=user, from_bot=True))[0]
        return users

    async def tap(self, user: int) -> float:
        """Seconds from the press to the ``sendDocument`` received at the sandbox."""
        greeting = self.greetings[user]
        data = next(b["callback_data"] for row in greeting["reply_markup"]["inline_keyboard"] for b in row
                    if "каталог" in b["text"])
        documents = len([c for c in await self.sandbox.calls("sendDocument") if int(c["chat_id"]) == user])
        since = time.perf_counter()
        await self.sandbox("click", user_id=user, message=greeting, callback_data=data)
        while True:
            sent = [c for c in await self.sandbox.calls("sendDocument") if int(c["chat_id"]) == user]
            if len(sent) > documents:
                return sent[documents]["finished_at"] - since
            await asyncio.sleep(0.005)


def _stats(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "p50_s": round(percentile(values, 0.5), 3), "p95_s": round(percentile(values, 0.95), 3),
            "max_s": round(max(values), 3)}


async def measure(size: int, taps: int) -> dict[str, Any]:
    """The figures for a catalogue of ``size`` products."""
    sandbox = await RemoteSandbox.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-catalog-") as tmp:
            workdir = Path(tmp)
            catalog = catalogue_of(size, workdir / "catalog")
            started = time.perf_counter()
            async with service(sandbox, catalog, workdir) as (base, pid):
                start_s = time.perf_counter() - started
                idle = await settled(pid, processes=2)  # the service and its RENDER_WARM=1 worker, ready
                buyers = Buyers(sandbox, base)
                users = await buyers.arrive(3 + taps + 30)
                first = await buyers.tap(users[0])
                await asyncio.gather(*(buyers.tap(user) for user in users[1:3]))
                single = [await buyers.tap(user) for user in users[3:3 + taps]]
                burst: list[float] = []
                for round_ in range(3):
                    group = users[3 + taps + 10 * round_:3 + taps + 10 * (round_ + 1)]
                    burst += await asyncio.gather(*(buyers.tap(user) for user in group))
                cached = [await buyers.tap(users[3]) for _ in range(10)]
                after = memory(pid)
                pdfs = sorted((workdir / "data" / "catalogs").glob("*.pdf"))
                pdf = pdfs[0].read_bytes()
            cpu = await asyncio.to_thread(tap_cpu, catalog)
    finally:
        await sandbox.close()
    return {
        "products": size, "start_s": round(start_s, 2),
        "first_buyer_of_variant_s": round(first, 3),
        "cold_one_at_a_time": _stats(single),
        "cold_10_at_once": _stats(burst),
        "cached_resend_ms": {"p50": round(percentile(cached, 0.5) * 1000, 1), "max": round(max(cached) * 1000, 1)},
        "pdf_kib": round(len(pdf) / 1024), "pages": len(PdfReader(io.BytesIO(pdf)).pages),
        "memory_idle": idle, "memory_after_renders": {**after, "renders": len(pdfs)},
        "worker_cpu_per_cold_tap_s": cpu,
    }


def tap_cpu(catalog: Path, runs: int = 10) -> dict[str, float]:
    """Thread CPU seconds (p50) of a cold tap's work in a worker: the cover, and composing it with the body."""
    request = CatalogRequest(name="Покупатель", company="ООО «Опт»", city="Казань", categories=("shoes", "women"),
                             volume="100to300k")
    body = render_body(request, catalog)
    render_cover(request, catalog)  # load the catalogue in this process
    cover_s, compose_s = [], []
    for index in range(runs):
        begin = time.thread_time()
        cover = render_cover(replace(request, name=f"Покупатель {index}"), catalog)
        middle = time.thread_time()
        compose(cover, body)
        cover_s.append(middle - begin)
        compose_s.append(time.thread_time() - middle)
    return {"cover": round(percentile(cover_s, 0.5), 3), "compose": round(percentile(compose_s, 0.5), 3)}


async def main(sizes: list[int], taps: int) -> list[dict[str, Any]]:
    return [await measure(size, taps) for size in sizes]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, nargs="+", default=[48, 200], help="catalogue sizes (default 48 200)")
    parser.add_argument("--taps", type=int, default=20, help="never-seen buyers tapping one at a time (default 20)")
    options = parser.parse_args()
    load_before = os.getloadavg()
    results = asyncio.run(main(options.products, options.taps))
    print(json.dumps(results, ensure_ascii=False, indent=2))
    for result in results:
        for case in ("cold_one_at_a_time", "cold_10_at_once"):
            p95 = result[case]["p95_s"]
            print(f"{result['products']} products, {case}: p95 {p95} s — target < {TARGET_P95_S} s "
                  f"{'met' if p95 < TARGET_P95_S else 'MISSED'}")
    idle = results[0]["memory_idle"]
    print(f"idle optobot run ({idle['processes']} processes): RSS {idle['rss_mb']} MB — target ≤ {TARGET_IDLE_MB} MB "
          f"{'met' if idle['rss_mb'] <= TARGET_IDLE_MB else 'MISSED'} (PSS {idle['pss_mb']} MB)")
    print(f"load average before/after: {' '.join(f'{x:.2f}' for x in load_before)} / "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
