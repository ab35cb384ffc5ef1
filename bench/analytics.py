"""Analytics benchmark: ``python -m bench.analytics [--leads 100000] [--events 2000000] [--database-url URL]``.

Seeds a history of ``--leads`` leads arriving over 180 days with ``--events`` lead events (stage moves,
questions, SLA breaches…), answered questions, broadcasts and ad spend (a fresh SQLite file unless
``--database-url`` names an empty PostgreSQL database), then, in a child process so that its peak RSS is
the report's own:

- **report**: ``/report`` for 90 days as the bot computes it (every query: the funnel overall and by
  source for the period and the previous one, time to the key stage, first replies, managers, SLA,
  broadcasts, spend, leads per day), best of 5;
- **/report**: the whole command in the running service against the sandbox Bot API in its own
  process: from the admin's ``/report`` handed to the bot (``getUpdates``) to the summary's
  ``sendMessage`` after the four chart images (stamped by the sandbox on one clock), best of 5;
- **PDF / XLSX**: ``optobot report`` for the 90 days with every breakdown, each format once.
"""
from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert

from bot.analytics.models import AdSpend
from bot.analytics.period import Period
from bot.config import DEFAULT_QUIZ, load_settings
from bot.db import migrate
from bot.db.models import AD, COLD, PHONE, QUIZ, Lead, LeadEvent
from bot.db.session import database, open_database
from bot.funnel import STAGES
from bot.journal import CRM_STAGE_CHANGED, GREETED, LEAD_CREATED, QUESTION_ASKED, QUIZ_COMPLETED, SLA_BREACHED
from bot.quiz import load_quiz
from bot.logs import setup_logging
from bot.relay.models import RelayWait
from broadcasts.models import BLOCKED, FINISHED, ONEOFF, SENT, Broadcast, Delivery

DAYS = 180
ADMIN = 42
SOURCES = [("yandex", "cpc"), ("vk", "cpm"), ("google", "cpc"), ("telegram", "ads")]
MANAGERS = [(501 + i, f"Менеджер {i + 1}", 9001 + i) for i in range(6)]
CHUNK = 10_000


def _rss_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not carried over from the parent by fork + exec)."""
    with open("/proc/self/status") as status:
        return next(round(int(line.split()[1]) / 1024, 1) for line in status if line.startswith("VmHWM:"))


class History:
    """A reproducible random history (rows as dicts, ids assigned here)."""

    def __init__(self, leads: int, events: int, now: datetime) -> None:
        self.rng = random.Random(14)
        self.now = now
        self.leads = leads
        self.events = events
        quiz = load_quiz(DEFAULT_QUIZ)
        self.choices = [(q.key, q.type, [o.key for o in q.options]) for q in quiz.questions if q.type != "text"]

    def _interests(self) -> dict[str, Any]:
        interests: dict[str, Any] = {}
        for key, kind, options in self.choices:
            interests[key] = self.rng.sample(options, self.rng.randint(1, 2)) if kind == "multi" else self.rng.choice(options)
        return interests

    def lead(self, lead_id: int, created: datetime) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
        """A lead row, its events and its answered questions."""
        rng = self.rng
        arrival = rng.choices((QUIZ, AD, PHONE, COLD), (40, 30, 10, 20))[0]
        source, medium = rng.choice(SOURCES) if arrival != COLD else (None, None)
        utm = {"source": source, "medium": medium, "campaign": f"{source}_{rng.randint(1, 3)}"} if source else {}
        at = lambda hours: created + timedelta(hours=hours)  # noqa: E731
        reach = rng.random()
        stage_index = 0 if reach < 0.3 else 1 if reach < 0.5 else 2 if reach < 0.8 else rng.randint(3, len(STAGES) - 1)
        lost = stage_index < 3 and rng.random() < 0.15
        manager = rng.choice(MANAGERS)
        row = {
            "id": lead_id, "tg_user_id": 10_000_000 + lead_id, "first_name": f"Покупатель {lead_id}", "language": "ru",
            "interests": self._interests(), "source": source, "utm": utm, "tags": [], "flow": {}, "arrival": arrival,
            "stage": "lost" if lost else STAGES[stage_index], "furthest_stage": STAGES[stage_index],
            "key_stage_at": at(24 * 3) if stage_index >= 3 else None, "responsible_user_id": manager[2],
            "quiz_completed_at": at(0.1) if stage_index >= 1 else None, "greeted_at": at(0.2) if arrival != QUIZ or reach > 0.1 else None,
            "first_reply_ms": rng.randint(8, 400), "catalog_sent_at": at(1) if stage_index >= 2 else None,
            "test_batch_requested_at": at(30) if stage_index >= 3 and rng.random() < 0.7 else None,
            "deal_price": rng.randint(50, 900) * 1000 if stage_index >= STAGES.index("main_batch_sent") else None,
            "created_at": created, "updated_at": created,
        }
        events = [{"lead_id": lead_id, "kind": LEAD_CREATED, "data": {"via": "telegram"}, "created_at": created}]
        if row["greeted_at"]:
            events.append({"lead_id": lead_id, "kind": GREETED, "data": {"reply": "greeting"}, "created_at": row["greeted_at"]})
        if row["quiz_completed_at"]:
            events.append({"lead_id": lead_id, "kind": QUIZ_COMPLETED, "data": {"via": "telegram"}, "created_at": row["quiz_completed_at"]})
        for index in range(3, stage_index + 1):
            events.append({"lead_id": lead_id, "kind": CRM_STAGE_CHANGED, "created_at": at(24 * index),
                           "data": {"stage": STAGES[index], "previous": STAGES[index - 1], "source": "webhook"}})
        if lost:
            events.append({"lead_id": lead_id, "kind": CRM_STAGE_CHANGED, "created_at": at(72),
                           "data": {"stage": "lost", "previous": STAGES[stage_index], "source": "webhook"}})
        waits = []
        questions = max(0, round(rng.gauss(self.events / self.leads - len(events), 3)))
        for index in range(questions):
            asked = at(2 + index * 5)
            events.append({"lead_id": lead_id, "kind": QUESTION_ASKED, "data": {"text": "Есть размеры 42–46?"}, "created_at": asked})
            if index < 2:
                seconds = int(rng.lognormvariate(5.5, 1.2))
                waits.append({"lead_id": lead_id, "started_at": asked, "in_hours": rng.random() < 0.7, "due_at": asked,
                              "escalate_at": asked, "level": 1 if seconds > 300 else 0, "closed_at": asked + timedelta(seconds=seconds),
                              "answered_by": manager[0], "answered_by_name": manager[1], "response_seconds": seconds, "dismissed": False})
                if seconds > 300:
                    events.append({"lead_id": lead_id, "kind": SLA_BREACHED, "created_at": asked + timedelta(minutes=5),
                                   "data": {"level": 1, "minutes": 5, "manager": manager[1], "responsible_user_id": manager[2]}})
        return row, events, waits


async def seed(url: str, leads: int, events: int) -> dict[str, Any]:
    """Write the history; returns what was written and how long it took."""
    began = time.perf_counter()
    db = open_database(url)
    await migrate.upgrade(db.engine)
    now = datetime.now(UTC)
    history = History(leads, events, now)
    written = {"leads": 0, "events": 0, "waits": 0, "deliveries": 0}
    batch: dict[str, list[dict[str, Any]]] = {"leads": [], "events": [], "waits": []}

    async def flush() -> None:
        async with db.begin() as session:
            for key, model in (("leads", Lead), ("events", LeadEvent), ("waits", RelayWait)):
                if batch[key]:
                    await session.execute(insert(model), batch[key])
                    written[key] += len(batch[key])
                    batch[key] = []

    # Rows go in as a live database gets them: in order of time (events of many leads interleaved).
    arrivals = sorted(now - timedelta(seconds=history.rng.uniform(0, DAYS * 86400)) for _ in range(leads))
    later: list[tuple[datetime, int, str, dict[str, Any]]] = []
    for lead_id, created in enumerate(arrivals, start=1):
        row, lead_events, waits = history.lead(lead_id, created)
        batch["leads"].append(row)
        for index, item in enumerate([*lead_events, *waits]):
            moment = item.get("created_at") or item["started_at"]
            heapq.heappush(later, (moment, lead_id * 1000 + index, "events" if "kind" in item else "waits", item))
        while later and later[0][0] <= created:
            _, _, key, item = heapq.heappop(later)
            batch[key].append(item)
        if len(batch["events"]) >= CHUNK * 5:
            await flush()
    while later:
        _, _, key, item = heapq.heappop(later)
        batch[key].append(item)
    await flush()
    rng = random.Random(7)
    async with db.begin() as session:
        for number in range(6):
            started = now - timedelta(days=15 * number + 3)
            session.add(Broadcast(name=f"Рассылка {number + 1}", kind=ONEOFF, state=FINISHED, prepared=True, started_at=started,
                                  finished_at=started, content={"variants": [{"name": "A", "text": "…"}, {"name": "B", "text": "…"}]}))
        await session.flush()
    for number in range(6):
        rows = []
        for lead_id in rng.sample(range(1, leads + 1), min(leads, 20_000)):
            state = SENT if rng.random() < 0.95 else BLOCKED
            sent = now - timedelta(days=15 * number + 3) if state == SENT else None
            rows.append({"broadcast_id": number + 1, "lead_id": lead_id, "variant": rng.choice("AB"), "state": state, "sent_at": sent,
                         "replied_at": sent if sent and rng.random() < 0.05 else None,
                         "converted_at": sent if sent and rng.random() < 0.01 else None})
        async with db.begin() as session:
            for start in range(0, len(rows), CHUNK):
                await session.execute(insert(Delivery), rows[start:start + CHUNK])
        written["deliveries"] += len(rows)
    spend = [{"day": date.today() - timedelta(days=day), "source": source, "campaign": f"{source}_{n}", "amount": rng.randint(1, 20) * 100_000}
             for day in range(DAYS) for source, _ in SOURCES for n in (1, 2, 3)]
    async with db.begin() as session:
        await session.execute(insert(AdSpend), spend)
    await db.close()
    return {**written, "seconds": round(time.perf_counter() - began, 1)}


# ------------------------------------------------------------------ measuring (each in its own process)
def _period() -> Period:
    return Period.last_days(90, datetime.now(UTC), ZoneInfo("Europe/Moscow"))


async def _report(url: str) -> dict[str, Any]:
    """What /report computes for 90 days (and, for the files, every breakdown): best of 5, peak RSS."""
    from bot.analytics.queries import dimensions
    from bot.analytics.report import build

    db = open_database(url)
    quiz = load_quiz(DEFAULT_QUIZ)
    timings: dict[str, list[float]] = {"report_90_days": [], "every_breakdown": []}
    for _ in range(5):
        for name, by in (("report_90_days", ("source",)), ("every_breakdown", dimensions(quiz))):
            started = time.perf_counter()
            report = await build(db, quiz, _period(), by=by, crm=True)
            timings[name].append(time.perf_counter() - started)
    await db.close()
    return {**{f"{name}_s": {"best": round(min(t), 3), "worst": round(max(t), 3)} for name, t in timings.items()},
            "leads_in_period": report.total.arrived, "peak_rss_mb": _rss_mb()}


def _worker_rss() -> float:
    """Run in a drawing worker: its own peak RSS."""
    return _rss_mb()


async def _telegram(url: str) -> dict[str, Any]:
    """/report 90 in the running service, the Bot API sandbox in its own process: from the getUpdates that
    delivered the command to the summary's sendMessage (after the album), best of 5 (the first starts the
    drawing worker)."""
    from bench.journey import RemoteSandbox
    from bot.app import App

    sandbox = await RemoteSandbox.start()
    try:
        await sandbox("add_user", user_id=ADMIN, first_name="Админ")
        with tempfile.TemporaryDirectory(prefix="bench-analytics-") as workdir:
            settings = load_settings(_env_file=None, BOT_TOKEN="424242:BENCH", TELEGRAM_API_URL=sandbox.base_url, HTTP_PORT=0,
                                     DATABASE_URL=url, DATA_DIR=workdir, ADMIN_IDS=str(ADMIN), REPORT_SCHEDULE="off", LOG_LEVEL="WARNING")
            app = App(settings)
            async with app.running():
                rss_idle = _rss_mb()
                timings = []
                for attempt in range(6):
                    before = len(await sandbox.calls("sendMessage"))
                    await sandbox("send_text", user_id=ADMIN, text="/report 90")
                    await sandbox("wait_for_messages", chat_id=ADMIN, count=5 * (attempt + 1), timeout=120)
                    delivered = max(call["finished_at"] for call in await sandbox.calls("getUpdates")
                                    if "/report 90" in json.dumps(call["result"], ensure_ascii=False))
                    summary = (await sandbox.calls("sendMessage"))[before]
                    timings.append(summary["started_at"] - delivered)
                worker = await app.analytics.drawing._run(_worker_rss)
    finally:
        await sandbox.close()
    return {"report_90_days_s": {"best": round(min(timings[1:]), 3), "worst": round(max(timings[1:]), 3),
                                 "first_with_worker_start": round(timings[0], 3)},
            "service_rss_idle_mb": rss_idle, "service_peak_rss_mb": _rss_mb(), "drawing_worker_peak_rss_mb": worker}


async def _files(url: str) -> dict[str, Any]:
    """``optobot report`` for the 90 days, every breakdown, as PDF and as XLSX: seconds each."""
    from bot.analytics import export
    from bot.analytics.labels import Labels
    from bot.analytics.queries import dimensions
    from bot.analytics.report import build

    quiz = load_quiz(DEFAULT_QUIZ)
    async with database(url) as db:
        report = await build(db, quiz, _period(), by=dimensions(quiz), crm=True)
    result = {}
    for fmt in ("pdf", "xlsx"):
        started = time.perf_counter()
        size = len(export.render(report, Labels("ru", quiz, {}), fmt))
        result[fmt] = {"seconds": round(time.perf_counter() - started, 2), "bytes": size}
    return {**result, "peak_rss_mb": _rss_mb()}


def _child(part: str, url: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.analytics", "--child", part, url], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--database-url", help="an empty database to fill (PostgreSQL); default: a new SQLite file")
    parser.add_argument("--seeded", metavar="URL", help="measure a database seeded before (skip seeding)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    setup_logging("WARNING")
    if args.child:
        part, url = args.child
        print(json.dumps(asyncio.run({"report": _report, "telegram": _telegram, "files": _files}[part](url))))
        return
    with tempfile.TemporaryDirectory(prefix="bench-analytics-") as tmp:
        url = args.seeded or args.database_url or f"sqlite+aiosqlite:///{tmp}/bench.sqlite3"
        result: dict[str, Any] = {"database": url.split(":")[0]}
        if not args.seeded:
            result["seeded"] = asyncio.run(seed(url, args.leads, args.events))
        for part in ("report", "telegram", "files"):
            result[part] = _child(part, url)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    target = 2.0 if result["database"].startswith("sqlite") else 1.0
    print(f"targets: /report for 90 days < {target} s (got {result['telegram']['report_90_days_s']['best']} s in the service, "
          f"{result['report']['report_90_days_s']['best']} s of it counting), peak RSS < 300 MB "
          f"(got {result['telegram']['service_peak_rss_mb']} MB, the drawing worker {result['telegram']['drawing_worker_peak_rss_mb']} MB)")


if __name__ == "__main__":
    main()
