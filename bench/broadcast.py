"""Broadcast benchmark: ``python -m bench.broadcast [--quick]``.

Side by side in one run, against the sandbox Bot API in a separate process (as Telegram is
remote), on a fresh SQLite file:

(a) the engine's own ceiling with the sandbox's limits off and the engine's bucket unbounded
    (recipients selected and validated, then delivered with the crash-safe bookkeeping; the best
    of three runs, as other work on the machine only ever slows a run down), and
    paid mode (``BROADCAST_PAID=1000``) with the sandbox enforcing 1,000/s;
(b) the sandbox enforcing Telegram's 30/s: the achieved rate at ``BROADCAST_RATE`` (25/s) and
    the 429s;
(c) selecting a 100,000-lead segment (count, stream + validate every message, materialise the
    delivery rows) in a child process, with its peak memory;
(d) the same broadcasts through aiogram_broadcaster (PyPI) with its SQLAlchemy storage (its
    persisted per-chat state): unbounded (best of three, like ours), paced at 25/s with its
    interval, and unpaced under the 30/s limit (no retry_after handling: 429s become failures).
    It sends the same message as ours: personalised per recipient, with the same keyboard.
    The report ends with the ratio of the two unbounded rates.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert

from bot.config import Settings, load_settings
from bot.db import migrate
from bot.db.models import Lead
from bot.db.session import open_database
from bot.logs import setup_logging
from bot.ratelimit import RateLimit, Window, paced

if TYPE_CHECKING:
    from bench.journey import RemoteSandbox

# aiogram alone takes ~165 MB of RSS when imported, so everything that imports it is imported
# where it is used: the child process measuring the segment selection never loads it.

FIRST_USER = 700_000
TEXT = "{{ first_name }}, новая коллекция обуви уже на складе: 42 модели, цены для объёма {{ volume }}."
INTERESTS = {"category": ["shoes"], "volume": "100to300k", "channel": "marketplaces", "city": "Казань"}
BUTTONS = [{"text": "📦 Хочу тестовую партию", "action": "test"}, {"text": "Сайт", "url": "https://opt.example.ru"}]


def _settings(database_url: str, api_url: str, data_dir: str, token: str = "1:offline", **extra: Any) -> Settings:
    return load_settings(_env_file=None, BOT_TOKEN=token, TELEGRAM_API_URL=api_url, DATABASE_URL=database_url, DATA_DIR=data_dir,
                         QUIET_HOURS="", LOG_LEVEL="WARNING", **extra)


async def _seed(database_url: str, count: int, *, tags: Any = lambda index: [], matching: int | None = None) -> None:
    """``count`` leads (user ids from FIRST_USER); the first ``matching`` in the shoe segment, the rest not."""
    db = open_database(database_url)
    await migrate.upgrade(db.engine)
    rows = ({"tg_user_id": FIRST_USER + i, "first_name": f"Покупатель {i}", "language": "ru", "stage": "catalog_sent",
             "interests": INTERESTS if matching is None or i < matching else {**INTERESTS, "category": ["women"]},
             "tags": tags(i), "utm": {}, "flow": {}} for i in range(count))
    async with db.begin() as session:
        chunk: list[dict[str, Any]] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) == 5000:
                await session.execute(insert(Lead), chunk)
                chunk = []
        if chunk:
            await session.execute(insert(Lead), chunk)
    await db.close()


async def _ours(settings: Settings, tag: str, *, limiter: RateLimit | None = None) -> dict[str, Any]:
    """One broadcast to the leads tagged ``tag``: selection time, then delivery time and rate."""
    from bot.journal import Journal
    from bot.quiz import load_quiz
    from broadcasts.campaigns import CampaignSpec
    from broadcasts.engine import STOPPED
    from broadcasts.service import Broadcasts

    db = open_database(settings.database_url)
    service = Broadcasts(settings, db, Journal(), load_quiz(settings.quiz_config), limiter=limiter)
    try:
        spec = CampaignSpec(name=f"bench {tag}", segment={"tags": [tag]}, message={"text": TEXT, "buttons": BUTTONS})
        broadcast_id = await service.campaigns.create(spec)
        service.engine.stopping = True  # first run: select and validate the recipients only
        started = time.perf_counter()
        assert await service.engine.run(broadcast_id) == STOPPED
        selected = time.perf_counter() - started
        service.engine.stopping = False
        started, cpu = time.perf_counter(), time.process_time()
        while (await service.engine.run(broadcast_id)) != "finished":
            await asyncio.sleep(0.1)
        took, cpu = time.perf_counter() - started, time.process_time() - cpu
        stats = await service.campaigns.stats(broadcast_id)
    finally:
        await service.close()
        await db.close()
    sent = stats.total.states["sent"]
    return {"recipients": stats.total.recipients, "sent": sent, "failed": stats.total.recipients - sent,
            "select_and_validate_s": round(selected, 2), "send_s": round(took, 2), "rate_per_s": round(sent / took, 1),
            "cpu_ms_per_message": round(cpu / sent * 1000, 3)}


def _personal_content() -> Any:
    """aiogram_broadcaster's content for our message: the recipient's name and the same two buttons, per chat."""
    from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup
    from aiogram_broadcaster.contents import TextContent
    from aiogram_broadcaster.contents.adapters import LazyContentAdapter

    keyboard = InlineKeyboardMarkup(inline_keyboard=[[InlineKeyboardButton(text=BUTTONS[0]["text"], callback_data="bc:1:test")],
                                                     [InlineKeyboardButton(text=BUTTONS[1]["text"], url=BUTTONS[1]["url"])]])

    class Personal(LazyContentAdapter):
        async def __call__(self, chat_id: int) -> TextContent:
            text = TEXT.replace("{{ first_name }}", f"Покупатель {chat_id - FIRST_USER}").replace("{{ volume }}", "100–300 тыс ₽")
            return TextContent(text=text, reply_markup=keyboard)

    return Personal()


async def _baseline(settings: Settings, chats: list[int], *, interval: float) -> dict[str, Any]:
    """The same message through aiogram_broadcaster, its per-chat state persisted with SQLAlchemy storage."""
    from aiogram_broadcaster import Broadcaster
    from aiogram_broadcaster.intervals import SimpleInterval
    from aiogram_broadcaster.mailer.chats import ChatState
    from aiogram_broadcaster.storages.sqlalchemy import SQLAlchemyStorage

    from bot.telegram import create_bot

    db = open_database(settings.database_url.replace(".sqlite3", "-baseline.sqlite3"))
    storage = SQLAlchemyStorage.from_engine(db.engine)
    await storage.startup()
    bot = create_bot(settings.bot_token.get_secret_value(), settings.telegram_api_url, retry_flood=False)
    try:
        broadcaster = Broadcaster(bot, storage=storage)
        mailer = await broadcaster.create_mailer(chats=chats, content=_personal_content(),
                                                 interval=SimpleInterval(interval=interval) if interval else None)
        started = time.perf_counter()
        await mailer.start()
        took = time.perf_counter() - started
        sent, failed = len(mailer.chats.registry[ChatState.SUCCESS]), len(mailer.chats.registry[ChatState.FAILED])
    finally:
        await bot.session.close()
        await storage.shutdown()
        await db.close()
    return {"recipients": len(chats), "sent": sent, "failed": failed, "send_s": round(took, 2), "rate_per_s": round(sent / took, 1)}


async def _throttled(sandbox: RemoteSandbox, phase: Any) -> dict[str, Any]:
    """Run ``phase`` and add the 429s the sandbox answered meanwhile."""
    before = len(await sandbox("throttles"))
    result = await phase
    return {**result, "http_429": len(await sandbox("throttles")) - before}


async def delivery(ceiling: int, limited: int, baseline: int) -> dict[str, Any]:
    """(a), (b) and (d) against one sandbox process."""
    from bench.journey import TOKEN, RemoteSandbox

    sandbox = await RemoteSandbox.start()
    users = max(ceiling, limited, baseline)
    try:
        for first in range(0, users, 200):
            await asyncio.gather(*(sandbox("add_user", user_id=FIRST_USER + i, first_name=f"Покупатель {i}", started=True)
                                   for i in range(first, min(users, first + 200))))
        with tempfile.TemporaryDirectory(prefix="bench-broadcast-") as tmp:
            url = f"sqlite+aiosqlite:///{tmp}/bench.sqlite3"
            await _seed(url, users, tags=lambda i: [tag for tag, size in (("ceiling", ceiling), ("limited", limited)) if i < size])
            settings = _settings(url, sandbox.base_url, tmp, TOKEN)
            chats = list(range(FIRST_USER, FIRST_USER + baseline))
            report: dict[str, Any] = {}

            await sandbox("rate_limits", enabled=False)
            runs = [await _throttled(sandbox, _ours(settings, "ceiling", limiter=Window(*paced(1e9)))) for _ in range(3)]
            report["a_ceiling_limits_off"] = {**max(runs, key=lambda run: run["rate_per_s"]), "runs_per_s": [run["rate_per_s"] for run in runs]}
            runs = [await _throttled(sandbox, _baseline(settings, chats, interval=0)) for _ in range(3)]
            report["d_baseline_limits_off"] = {**max(runs, key=lambda run: run["rate_per_s"]), "runs_per_s": [run["rate_per_s"] for run in runs]}

            await sandbox("rate_limits", enabled=True, global_per_second=30, paid_per_second=1000)
            paid = _settings(url, sandbox.base_url, tmp, TOKEN, BROADCAST_PAID="1000")
            report["a_paid_1000_per_s"] = await _throttled(sandbox, _ours(paid, "ceiling"))

            await sandbox("rate_limits", enabled=True, global_per_second=30)
            report["b_limited_30_per_s_at_25"] = await _throttled(sandbox, _ours(settings, "limited"))
            await sandbox("rate_limits", enabled=True, global_per_second=30)
            report["d_baseline_30_per_s_interval_25"] = await _throttled(sandbox, _baseline(settings, chats[:limited], interval=1 / 25))
            await sandbox("rate_limits", enabled=True, global_per_second=30)
            report["d_baseline_30_per_s_no_interval"] = await _throttled(sandbox, _baseline(settings, chats[:limited], interval=0))
    finally:
        await sandbox.close()
    b = report["b_limited_30_per_s_at_25"]
    report["b_limited_30_per_s_at_25"] = {**b, "share_of_configured": round(b["rate_per_s"] / 25, 3),
                                          "meets_target": b["rate_per_s"] >= 0.95 * 25 and b["http_429"] == 0}
    report["a_ceiling_limits_off"]["meets_target"] = report["a_ceiling_limits_off"]["rate_per_s"] >= 1000
    report["ratio_ours_to_baseline_limits_off"] = round(report["a_ceiling_limits_off"]["rate_per_s"]
                                                        / report["d_baseline_limits_off"]["rate_per_s"], 2)
    return report


SEGMENT = {"category": ["shoes"], "stage": ["qualified", "catalog_sent"], "last_broadcast": {"older_than_days": 3}}


def _rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


async def _select(url: str) -> dict[str, Any]:
    """Child process: count the segment and stream every recipient, importing no more than selection needs."""
    from broadcasts import segments

    before = _rss_mb()
    db = open_database(url)
    segment, now = segments.Segment(**SEGMENT), datetime.now(timezone.utc)
    started = time.perf_counter()
    async with db() as session:
        size = await segments.count(session, segment, now)
    counted = time.perf_counter() - started
    started, streamed = time.perf_counter(), 0
    async for page in segments.stream(db, segment, now):
        streamed += len(page)
    took = time.perf_counter() - started
    await db.close()
    return {"segment": size, "count_s": round(counted, 3), "stream_s": round(took, 2), "streamed": streamed,
            "rss_at_start_mb": before, "peak_rss_mb": _rss_mb(), "meets_target": _rss_mb() < 200}


async def _materialise(url: str) -> dict[str, Any]:
    """Child process: the service's own selection of a broadcast: validate every message, write the delivery rows."""
    from bot.journal import Journal
    from bot.quiz import load_quiz
    from broadcasts.campaigns import CampaignSpec
    from broadcasts.service import Broadcasts

    with tempfile.TemporaryDirectory(prefix="bench-segment-") as tmp:
        settings = _settings(url, "http://127.0.0.1:9", tmp)
        db = open_database(url)
        service = Broadcasts(settings, db, Journal(), load_quiz(settings.quiz_config))
        spec = CampaignSpec(name="bench 100k", segment=SEGMENT, message={"text": TEXT, "buttons": BUTTONS})
        before = _rss_mb()
        try:
            started = time.perf_counter()
            plan = await service.campaigns.plan(spec.segment, spec.content)
            planned = time.perf_counter() - started
            broadcast_id = await service.campaigns.create(spec)
            service.engine.stopping = True  # select, validate and write the rows; send nothing
            started = time.perf_counter()
            await service.engine.run(broadcast_id)
            prepared = time.perf_counter() - started
            total = (await service.campaigns.get(broadcast_id)).total
        finally:
            await service.close()
            await db.close()
    return {"plan_stream_validate_s": round(planned, 2), "plan_problems": len(plan.problems), "materialise_s": round(prepared, 2),
            "delivery_rows": total, "rss_with_aiogram_loaded_mb": before, "peak_rss_mb": _rss_mb(),
            "growth_mb": round(_rss_mb() - before, 1)}


def _child(*argv: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.broadcast", *argv], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def segment(leads: int, matching: int) -> dict[str, Any]:
    """(c): each part in a fresh process, so each peak memory is its own."""
    with tempfile.TemporaryDirectory(prefix="bench-segment-") as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/segment.sqlite3"
        subprocess.run([sys.executable, "-m", "bench.broadcast", "--child", "seed", url, str(leads), str(matching)], check=True)
        return {"leads": leads, "select": _child("--child", "select", url), "service": _child("--child", "materialise", url)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test of the benchmark)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    setup_logging("WARNING")
    if args.child:
        part, url, *rest = args.child
        if part == "seed":
            asyncio.run(_seed(url, int(rest[0]), matching=int(rest[1])))
        else:
            print(json.dumps(asyncio.run({"select": _select, "materialise": _materialise}[part](url))))
        return
    sizes = (1000, 150, 500) if args.quick else (5000, 750, 2000)
    report = {"c_segment_100k": segment(12_000 if args.quick else 120_000, 10_000 if args.quick else 100_000)}
    report.update(asyncio.run(delivery(*sizes)))
    print(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
