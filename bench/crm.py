"""amoCRM sync, timed from outside: buyers' messages → notes in the sandbox amoCRM, running in its own process.

    python -m bench.crm [--rps 6] [--leads 100] [--messages 10] [--rate 0]

The sandbox (``python -m bot.sandbox.amocrm``) enforces amoCRM's 7 requests/s (429 beyond) and stamps every request
and note with ``time.monotonic()`` (one clock for all processes on Linux); the client is limited to ``--rps``. The CRM
worker runs from the start while every lead writes its messages to the journal one after another, all leads at once
(open loop: nobody waits for amoCRM), or, with ``--rate``, that many messages a second in all (lead by lead, round
after round). Each message is timed from the moment its journal write began (with ``--rate``: its arrival time, so a
write queued behind the lead's previous one counts) to the moment its note was created in amoCRM. Scenario 1: the leads are already in amoCRM (a busy hour). Scenario 2: the leads are new
(contact search by phone, card creation, then the notes). Targets: ≥ 150 notes/s with the leads in amoCRM (first write
to last note; all at once only), ≤ ``--rps`` requests in any second, no 429.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from bench.common import percentile
from bot.config import DEFAULT_QUIZ, Settings
from bot.crm.service import CrmSync
from bot.db import migrate
from bot.db.models import Lead
from bot.db.session import open_database
from bot.journal import LEAD_CREATED, Journal
from bot.logs import setup_logging
from bot.quiz import load_quiz
from bot.sandbox.amocrm.server import peak_rate

TARGET_NOTES_PER_SECOND = 150
AMOCRM_RATE_LIMIT = 7
WAIT_FOR_NOTES = 600.0  # seconds after the last write before giving up


@asynccontextmanager
async def amocrm_process() -> AsyncIterator[tuple[str, str]]:
    """``python -m bot.sandbox.amocrm`` in a child process: its base URL and token; stopped on exit."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.sandbox.amocrm", "--rate-limit", str(AMOCRM_RATE_LIMIT), stdout=asyncio.subprocess.PIPE)
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 60)  # type: ignore[union-attr]
        if not line:
            raise SystemExit("the sandbox amoCRM exited before serving: run `python -m bot.sandbox.amocrm` to see why")
        started = json.loads(line)
        yield started["base_url"], started["token"]
    finally:
        process.terminate()
        await process.wait()


def message_line(note_text: str, began: dict[str, float]) -> str | None:
    """The buyer's message a note carries (one of ``began``'s texts), if any."""
    return next((line for line in note_text.split("\n") if line in began), None)


async def notes_of(control: httpx.AsyncClient, began: dict[str, float], total: int, worker: asyncio.Task[None]) -> list[dict[str, Any]]:
    """The sandbox's notes that carry the buyers' messages, once all ``total`` are there (or the wait gives up)."""
    deadline = time.monotonic() + WAIT_FOR_NOTES
    while True:
        notes = [n for n in (await control.get("/sandbox/notes")).json() if message_line(n["text"] or "", began)]
        if len(notes) >= total or time.monotonic() > deadline or worker.done():
            return notes
        await asyncio.sleep(0.05)


async def scenario(name: str, args: argparse.Namespace, *, existing: bool) -> bool:
    async with amocrm_process() as (base_url, token), httpx.AsyncClient(base_url=base_url) as control:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.sqlite3'}"
            db = open_database(url)
            await migrate.upgrade(db.engine)
            journal = Journal()
            settings = Settings(_env_file=None, DATABASE_URL=url, AMOCRM_BASE_URL=base_url, AMOCRM_ACCESS_TOKEN=token, AMOCRM_RPS=args.rps)
            crm = CrmSync(settings, db, journal, load_quiz(DEFAULT_QUIZ))
            journal.subscribe(crm.writer)
            await crm.start()

            lead_ids = []
            async with db.begin() as session:
                for i in range(args.leads):
                    lead = Lead(first_name=f"Покупатель {i}", tg_user_id=10_000 + i, phone=f"+7999{i:07d}", language="ru")
                    session.add(lead)
                    await session.flush()
                    await journal.event(session, lead, LEAD_CREATED, via="telegram")
                    lead_ids.append(lead.id)
            if existing:
                await crm.worker.drain()
            total = args.leads * args.messages
            began: dict[str, float] = {}
            writes: list[float] = []

            async def buyer(i: int, lead_id: int) -> None:
                for n in range(args.messages):
                    text = f"сообщение {n} от {lead_id}"
                    if args.rate:  # timed from its arrival, even if the write starts later (behind the lead's previous one)
                        arrival = first + (n * args.leads + i) / args.rate
                        await asyncio.sleep(arrival - time.monotonic())
                    start = time.monotonic()
                    began[text] = min(start, arrival) if args.rate else start
                    async with db.begin() as session:
                        lead = await session.get(Lead, lead_id)
                        await journal.message(session, lead, direction="in", author="buyer", text=text)
                    writes.append(time.monotonic() - start)

            stop = asyncio.Event()
            first = time.monotonic()
            worker = asyncio.create_task(crm.worker.run(stop))
            await asyncio.gather(*(buyer(i, lead_id) for i, lead_id in enumerate(lead_ids)))
            written = time.monotonic() - first
            notes = await notes_of(control, began, total, worker)
            stop.set()
            await worker
            requests = [r for r in (await control.get("/sandbox/requests")).json() if r["at"] >= first]
            async with db() as session:
                crm_ids = dict((await session.execute(select(Lead.id, Lead.crm_lead_id).where(Lead.id.in_(lead_ids)))).all())
            await crm.close()
            await db.close()

    carried = Counter(message_line(n["text"], began) for n in notes)
    by_lead: dict[int, list[str]] = defaultdict(list)
    for note in sorted(notes, key=lambda n: n["id"]):
        by_lead[note["entity_id"]].append(message_line(note["text"], began) or "")
    in_order = len(carried) == total and max(carried.values()) == 1 and all(
        by_lead[crm_ids[lead_id]] == [f"сообщение {n} от {lead_id}" for n in range(args.messages)] for lead_id in lead_ids)
    latencies = [note["at"] - began[message_line(note["text"], began) or ""] for note in notes]
    last = max((note["at"] for note in notes), default=first)
    span = last - first
    rate = len(notes) / span if span > 0 else 0.0
    peak = peak_rate([r["at"] for r in requests])
    too_many = sum(1 for r in requests if r["status"] == 429)
    by_path = Counter(f"{r['method']} {r['path']}" for r in requests)
    print(f"\n{name}")
    offered = f"{args.rate:g} a second offered" if args.rate else "all at once"
    print(f"  {total} messages from {args.leads} leads ({offered}), the worker running: the last journal write done {written:.2f} s "
          f"after the first began (each write: p50 {percentile(writes, 0.5) * 1000:.0f} ms, p99 {percentile(writes, 0.99) * 1000:.0f} ms)")
    if latencies:
        print(f"  message written → note in amoCRM: p50 {percentile(latencies, 0.5):.2f} s, p95 {percentile(latencies, 0.95):.2f} s, "
              f"p99 {percentile(latencies, 0.99):.2f} s")
    print(f"  {len(notes)} of {total} notes in amoCRM {span:.2f} s after the first write: {rate:.0f} notes/s")
    print(f"  requests: {len(requests)} ({', '.join(f'{k} ×{v}' for k, v in sorted(by_path.items()))})")
    print(f"  peak request rate: {peak} in any 1 s (limit {args.rps}, amoCRM {AMOCRM_RATE_LIMIT}); 429 answers: {too_many}")
    print(f"  each lead's notes in order, none twice: {in_order}")
    return peak <= args.rps and too_many == 0 and in_order and (not existing or bool(args.rate) or rate >= TARGET_NOTES_PER_SECOND)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rps", type=int, default=6)
    parser.add_argument("--leads", type=int, default=100)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--rate", type=float, default=0, help="messages a second in all (0: every lead at once)")
    args = parser.parse_args()
    setup_logging("WARNING")
    ok = await scenario("1. leads already in amoCRM (notes only)", args, existing=True)
    ok &= await scenario("2. new leads (contact search, card, then notes)", args, existing=False)
    notes_target = "not checked with --rate" if args.rate else "with leads in amoCRM"
    print(f"\ntargets (≥ {TARGET_NOTES_PER_SECOND} notes/s {notes_target}, ≤ {args.rps} requests in any second, no 429): "
          + ("met" if ok else "NOT met"))
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    asyncio.run(main())
