"""amoCRM sync throughput: 1,000 messages from 100 leads queued at once → notes in the sandbox amoCRM.

    python -m bench.crm [--rps 6] [--leads 100] [--messages 10]

The sandbox enforces amoCRM's 7 requests/s (429 beyond); the client is limited to ``--rps``.
Scenario 1: the leads are already in amoCRM (a busy hour). Scenario 2: the leads are new
(contact search by phone, card creation, then the notes). Targets: ≥ 150 notes/s, no 429.
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bot.config import DEFAULT_QUIZ, Settings
from bot.crm.service import CrmSync
from bot.db import migrate
from bot.db.models import Lead
from bot.db.session import open_database
from bot.journal import LEAD_CREATED, Journal
from bot.logs import setup_logging
from bot.quiz import load_quiz
from bot.sandbox.amocrm import start_sandbox_amocrm

TARGET_NOTES_PER_SECOND = 150


async def scenario(name: str, args: argparse.Namespace, *, existing: bool) -> bool:
    sandbox, base_url, token = await start_sandbox_amocrm(rate_limit=7)
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

        async def buyer(lead_id: int) -> None:
            for n in range(args.messages):
                async with db.begin() as session:
                    lead = await session.get(Lead, lead_id)
                    await journal.message(session, lead, direction="in", author="buyer", text=f"сообщение {n} от {lead_id}")

        started = time.monotonic()
        await asyncio.gather(*(buyer(lead_id) for lead_id in lead_ids))
        arrived = time.monotonic() - started
        seen_before = len(sandbox.requests)
        started = time.monotonic()
        stop = asyncio.Event()
        worker = asyncio.create_task(crm.worker.run(stop))
        while len(sandbox.account.notes) < total:
            await asyncio.sleep(0.005)
        elapsed = time.monotonic() - started
        stop.set()
        await worker

        requests = sandbox.requests[seen_before:]
        stamps = [r.at for r in requests]
        peak, start = 0, 0
        for end, at in enumerate(stamps):
            while at - stamps[start] > 1.0:
                start += 1
            peak = max(peak, end - start + 1)
        too_many = sum(1 for r in requests if r.status == 429)
        in_order = all(
            [n["params"]["text"].split("\n")[1] for n in sandbox.account.find_notes(entity_ids=[crm_id])] ==
            [f"сообщение {n} от {lead_id}" for n in range(args.messages)]
            for lead_id, crm_id in zip(lead_ids, [lead["id"] for lead in sorted(sandbox.account.leads.values(), key=lambda x: x["id"])])
        )
        rate = total / elapsed
        by_path: dict[str, int] = {}
        for r in requests:
            key = f"{r.method} {r.path}"
            by_path[key] = by_path.get(key, 0) + 1
        print(f"\n{name}")
        print(f"  {total} messages from {args.leads} leads written to the journal (and queued) in {arrived:.2f} s")
        print(f"  then all {len(sandbox.account.notes)} notes in amoCRM {elapsed:.2f} s after the worker started: {rate:.0f} notes/s")
        print(f"  requests: {len(requests)} ({', '.join(f'{k} ×{v}' for k, v in sorted(by_path.items()))})")
        print(f"  peak request rate: {peak} in any 1 s (limit {args.rps}, amoCRM 7); 429 answers: {too_many}")
        print(f"  each lead's notes in order, none twice: {in_order and len(sandbox.account.notes) == total}")
        await crm.close()
        await db.close()
    await sandbox.close()
    return peak <= args.rps and too_many == 0 and in_order and (not existing or rate >= TARGET_NOTES_PER_SECOND)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rps", type=int, default=6)
    parser.add_argument("--leads", type=int, default=100)
    parser.add_argument("--messages", type=int, default=10)
    args = parser.parse_args()
    setup_logging("WARNING")
    ok = await scenario("1. leads already in amoCRM (notes only)", args, existing=True)
    ok &= await scenario("2. new leads (contact search, card, then notes)", args, existing=False)
    print(f"\ntargets (≥ {TARGET_NOTES_PER_SECOND} notes/s with leads in amoCRM, ≤ {args.rps} requests in any second, no 429): "
          + ("met" if ok else "NOT met"))
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    asyncio.run(main())
