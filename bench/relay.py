"""Operator-chat relay benchmark: ``python -m bench.relay [--conversations 100] [--interval 10] [--duration 30]``,
or ``python -m bench.relay --realistic [--conversations 50] [--interval 20] [--duration 120] [--groups 1 2 4]``.

The real service runs against the sandbox Bot API in a separate process (Telegram is remote),
on a fresh SQLite file, with a forum operator chat.

Without ``--realistic`` it measures the relay's own speed, Telegram's group limits off (in the sandbox
and the service: 18 messages/s into one group could never happen in Telegram). ``--conversations``
known leads first open their topics (not measured: topic creation and the card). Then:
- steady: for ``--duration`` seconds every conversation goes on at once — each buyer writes
  every ``--interval`` seconds on average (Poisson arrivals) and a manager answers each
  message 1–3 s later in the lead's topic;
- burst: every buyer writes at the same instant, then every topic answers at the same instant
  (the worst case: all the work of 100 messages queues on one event loop and one SQLite writer).
Latency is measured on the sandbox's one monotonic clock: from the ``getUpdates`` response that
delivered a message to the bot, to its ``copyMessage`` (into the topic, or to the buyer)
arriving at the Bot API. A buyer message goes through the whole journey first: logged, SLA wait
opened, amoCRM outbox filled, «thanks» sent when it is the first question after an answer.

``--realistic``: the sandbox enforces Telegram's limits for groups (20 posts and 20 new topics per group
per minute) and the service paces under them (its defaults), with 1, 2 and 4 operator groups in turn. Every
conversation is a new lead whose first message comes within the first ``--interval`` seconds (opening its
topic), then one every ``--interval`` s on average, for ``--duration`` s; no manager answers. Measured: buyer →
topic, from the ``getUpdates`` response that delivered a message to the request that posted it into the topic
(a copy, or the post that carried it with the topic's other queued texts), p50 and p95, until every message
is in its topic. The machine's load average is reported with the figures.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench.common import percentile
from bench.journey import SECRET, TOKEN, RemoteSandbox
from bot.app import App
from bot.config import load_settings
from bot.db.base import utcnow
from bot.db.models import Lead
from bot.logs import setup_logging
from bot.relay.models import RelayLink

OPERATORS = -1005550000000
MANAGER = 900_001
FIRST_BUYER = 600_000
TARGET_P99_MS = 200
UNLIMITED = 100_000  # posts and topics per group and minute: the limits off
POSTING = ("sendMessage", "copyMessage", "copyMessages", "forwardMessage", "forwardMessages")
Sent = tuple[int, int]  # (chat id, message id) of a message a user wrote


class Load:
    """Users writing through the sandbox's control API; remembers what they sent."""

    def __init__(self, sandbox: RemoteSandbox, threads: dict[int, int]) -> None:
        self.sandbox = sandbox
        self.threads = threads  # buyer id → the lead's topic
        self.inbound: list[Sent] = []
        self.outbound: list[Sent] = []

    async def buyer_writes(self, buyer: int, text: str) -> None:
        message = await self.sandbox("send_text", user_id=buyer, text=text)
        self.inbound.append((message["chat"]["id"], message["message_id"]))

    async def manager_answers(self, buyer: int, text: str) -> None:
        message = await self.sandbox("send_text", user_id=MANAGER, text=text, chat_id=OPERATORS, message_thread_id=self.threads[buyer])
        self.outbound.append((message["chat"]["id"], message["message_id"]))

    async def conversation(self, buyer: int, interval: float, until: float) -> None:
        """One buyer asking every ``interval`` s on average, each question answered 1–3 s later."""
        answers = []
        number = 0
        while (pause := random.expovariate(1 / interval)) < until - time.monotonic():
            await asyncio.sleep(pause)
            number += 1
            await self.buyer_writes(buyer, f"Вопрос {number}")
            answers.append(asyncio.create_task(self.answer_later(buyer, number)))
        await asyncio.gather(*answers)

    async def answer_later(self, buyer: int, number: int) -> None:
        await asyncio.sleep(random.uniform(1, 3))
        await self.manager_answers(buyer, f"Ответ {number}")

    async def copied(self, since: int) -> None:
        """Until every message sent has its copy (calls after number ``since``); polled: the control API takes no predicates."""
        expected = {(int(chat), int(message)) for chat, message in self.inbound + self.outbound}
        while True:
            done = {(int(c["params"]["from_chat_id"]), int(c["params"]["message_id"]))
                    for c in await self.sandbox("calls", offset=since, method="copyMessage")}
            if expected <= done:
                return
            await asyncio.sleep(0.2)

    async def latencies(self, since: int) -> tuple[list[float], list[float]]:
        """Seconds from delivery to copy, buyer → topic and topic → buyer."""
        delivered: dict[Sent, float] = {}
        for call in await self.sandbox("calls", offset=since, method="getUpdates"):
            updates = json.loads(call["result"]) if isinstance(call["result"], str) else call["result"] or []
            for update in updates:
                if "message" in update:
                    delivered.setdefault((update["message"]["chat"]["id"], update["message"]["message_id"]), call["finished_at"])
        copied = {(int(c["params"]["from_chat_id"]), int(c["params"]["message_id"])): c["started_at"]
                  for c in await self.sandbox("calls", offset=since, method="copyMessage")}
        return ([copied[sent] - delivered[sent] for sent in self.inbound], [copied[sent] - delivered[sent] for sent in self.outbound])


def summary(inbound: list[float], outbound: list[float], seconds: float) -> dict[str, Any]:
    return {
        "messages": {"buyer_to_topic": len(inbound), "topic_to_buyer": len(outbound),
                     "per_second": round((len(inbound) + len(outbound)) / seconds, 1)},
        "buyer_to_topic_ms": {f"p{p}": round(percentile(inbound, p / 100) * 1000, 1) for p in (50, 99)},
        "topic_to_buyer_ms": {f"p{p}": round(percentile(outbound, p / 100) * 1000, 1) for p in (50, 99)},
    }


async def steady(sandbox: RemoteSandbox, threads: dict[int, int], interval: float, duration: float) -> dict[str, Any]:
    load = Load(sandbox, threads)
    since = (await sandbox("state"))["calls"]
    started = time.monotonic()
    await asyncio.gather(*(load.conversation(buyer, interval, started + duration) for buyer in threads))
    await load.copied(since)
    return summary(*await load.latencies(since), time.monotonic() - started)


async def burst(sandbox: RemoteSandbox, threads: dict[int, int]) -> dict[str, Any]:
    load = Load(sandbox, threads)
    since = (await sandbox("state"))["calls"]
    started = time.monotonic()
    await asyncio.gather(*(load.buyer_writes(buyer, "Вопрос всем сразу") for buyer in threads))
    await load.copied(since)
    await asyncio.gather(*(load.manager_answers(buyer, "Ответ всем сразу") for buyer in threads))
    await load.copied(since)
    return summary(*await load.latencies(since), time.monotonic() - started)


async def open_topics(sandbox: RemoteSandbox, buyers: range) -> dict[int, int]:
    """Every buyer asks a first question; buyer id → topic, once every topic holds its card and copy."""
    await asyncio.gather(*(sandbox("send_text", user_id=buyer, text="Здравствуйте!") for buyer in buyers))
    await sandbox("wait_for_messages", chat_id=OPERATORS, count=2 * len(buyers), timeout=300)
    by_name = {topic["name"].split(" · ")[0].split(" ", 1)[1]: topic["message_thread_id"] for topic in await sandbox("topics", chat_id=OPERATORS)}
    return {buyer: by_name[f"Покупатель {buyer}"] for buyer in buyers}


async def main(conversations: int, interval: float, duration: float) -> dict[str, Any]:
    setup_logging("WARNING")
    sandbox = await RemoteSandbox.start()
    buyers = range(FIRST_BUYER, FIRST_BUYER + conversations)
    try:
        await sandbox("add_user", user_id=MANAGER, first_name="Менеджер")
        await sandbox("add_group", chat_id=OPERATORS, title="Оптовый отдел", forum=True, members=[MANAGER])
        for buyer in buyers:
            await sandbox("add_user", user_id=buyer, first_name=f"Покупатель {buyer}")
        with tempfile.TemporaryDirectory(prefix="bench-relay-") as workdir:
            await sandbox("rate_limits", enabled=False, group_limits=False)
            settings = load_settings(
                _env_file=None, BOT_TOKEN=TOKEN, TELEGRAM_API_URL=sandbox.base_url, WEBHOOK_SECRET=SECRET, HTTP_PORT=0,
                DATABASE_URL=f"sqlite+aiosqlite:///{Path(workdir) / 'bench.sqlite3'}", DATA_DIR=workdir, OPERATOR_CHAT_ID=OPERATORS,
                GROUP_POSTS_PER_MINUTE=UNLIMITED, GROUP_TOPICS_PER_MINUTE=UNLIMITED,
            )
            async with App(settings).running() as app:
                async with app.db.begin() as session:
                    session.add_all(Lead(tg_user_id=buyer, first_name=f"Покупатель {buyer}", greeted_at=utcnow(),
                                         interests={"category": ["shoes"], "city": "Казань"}) for buyer in buyers)
                threads = await open_topics(sandbox, buyers)
                results = {"steady": await steady(sandbox, threads, interval, duration), "burst": await burst(sandbox, threads)}
    finally:
        await sandbox.close()
    p99 = max(results["steady"]["buyer_to_topic_ms"]["p99"], results["steady"]["topic_to_buyer_ms"]["p99"])
    return {"conversations": conversations, "interval_s": interval, "duration_s": duration, **results,
            "target": f"steady p99 < {TARGET_P99_MS} ms", "meets_target": p99 < TARGET_P99_MS}


def posted(calls: list[dict[str, Any]]) -> dict[Sent, float]:
    """When each message the bot posted into a chat was requested: ``(chat id, message id)`` → the call's start."""
    found: dict[Sent, float] = {}
    for call in calls:
        if not call["ok"]:
            continue
        result = json.loads(call["result"]) if isinstance(call["result"], str) else call["result"]
        for message in result if isinstance(result, list) else [result]:
            found[(int(call["params"]["chat_id"]), int(message["message_id"]))] = call["started_at"]
    return found


async def realistic_run(conversations: int, interval: float, duration: float, groups: int) -> dict[str, Any]:
    """New leads writing at their pace into ``groups`` operator groups, Telegram's group limits on."""
    sandbox = await RemoteSandbox.start()
    buyers = range(FIRST_BUYER, FIRST_BUYER + conversations)
    chats = [OPERATORS - index for index in range(groups)]
    load = os.getloadavg()[0]
    try:
        await sandbox("add_user", user_id=MANAGER, first_name="Менеджер")
        for index, chat_id in enumerate(chats):
            await sandbox("add_group", chat_id=chat_id, title=f"Оптовый отдел {index + 1}", forum=True, members=[MANAGER])
        for buyer in buyers:
            await sandbox("add_user", user_id=buyer, first_name=f"Покупатель {buyer}")
        with tempfile.TemporaryDirectory(prefix="bench-relay-") as workdir:
            settings = load_settings(
                _env_file=None, BOT_TOKEN=TOKEN, TELEGRAM_API_URL=sandbox.base_url, WEBHOOK_SECRET=SECRET, HTTP_PORT=0,
                DATABASE_URL=f"sqlite+aiosqlite:///{Path(workdir) / 'bench.sqlite3'}", DATA_DIR=workdir,
                OPERATOR_CHAT_IDS=",".join(map(str, chats)),
            )
            async with App(settings).running() as app:
                async with app.db.begin() as session:
                    session.add_all(Lead(tg_user_id=buyer, first_name=f"Покупатель {buyer}", greeted_at=utcnow(),
                                         interests={"category": ["shoes"], "city": "Казань"}) for buyer in buyers)
                since = (await sandbox("state"))["calls"]
                inbound: list[Sent] = []
                started = time.monotonic()

                async def writes(buyer: int) -> None:
                    pause, number = random.uniform(0, interval), 0
                    while pause < started + duration - time.monotonic():
                        await asyncio.sleep(pause)
                        number += 1
                        message = await sandbox("send_text", user_id=buyer, text=f"Вопрос {number}")
                        inbound.append((message["chat"]["id"], message["message_id"]))
                        pause = random.expovariate(1 / interval)

                await asyncio.gather(*(writes(buyer) for buyer in buyers))
                links: dict[Sent, Sent] = {}
                while len(links) < len(inbound):  # until every message is in its topic
                    await asyncio.sleep(1)
                    async with app.db() as session:
                        rows = (await session.execute(select(RelayLink).where(RelayLink.direction == "in").order_by(RelayLink.id))).scalars()
                        for row in rows:
                            links.setdefault((row.buyer_chat_id, row.buyer_message_id), (row.operator_chat_id, row.operator_message_id))
                finished = time.monotonic() - started
        delivered: dict[Sent, float] = {}
        for call in await sandbox("calls", offset=since, method="getUpdates"):
            updates = json.loads(call["result"]) if isinstance(call["result"], str) else call["result"] or []
            for update in updates:
                if "message" in update:
                    delivered.setdefault((update["message"]["chat"]["id"], update["message"]["message_id"]), call["finished_at"])
        calls = [call for method in POSTING for call in await sandbox("calls", offset=since, method=method)]
        posts = posted(calls)
        latency = [posts[links[sent]] - delivered[sent] for sent in inbound]
        throttled = [t for t in await sandbox("throttles") if t["scope"] in ("group", "topics")]
    finally:
        await sandbox.close()
    return {
        "groups": groups, "messages": len(inbound), "posts": sum(1 for c in calls if c["ok"] and int(c["params"]["chat_id"]) in chats),
        "buyer_to_topic_s": {f"p{p}": round(percentile(latency, p / 100), 1) for p in (50, 95)},
        "max_s": round(max(latency), 1), "all_in_after_s": round(finished, 1), "group_429": len(throttled),
        "load_average": [round(load, 1), round(os.getloadavg()[0], 1)],
    }


async def realistic(conversations: int, interval: float, duration: float, groups: list[int]) -> dict[str, Any]:
    setup_logging("WARNING")
    return {"conversations": conversations, "interval_s": interval, "duration_s": duration,
            "runs": [await realistic_run(conversations, interval, duration, count) for count in groups]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realistic", action="store_true", help="Telegram's group limits on; 1, 2 and 4 operator groups")
    parser.add_argument("--conversations", type=int, help="default 100 (50 with --realistic)")
    parser.add_argument("--interval", type=float, help="mean seconds between one buyer's messages (default 10; 20 with --realistic)")
    parser.add_argument("--duration", type=float, help="seconds of load (default 30; 120 with --realistic)")
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 2, 4], help="operator groups of each --realistic run")
    options = parser.parse_args()
    if options.realistic:
        found = asyncio.run(realistic(options.conversations or 50, options.interval or 20.0, options.duration or 120.0, options.groups))
        print(json.dumps(found, ensure_ascii=False, indent=2))
        for run in found["runs"]:
            print(f"{run['groups']} group(s): buyer → topic p50/p95 {run['buyer_to_topic_s']['p50']}/{run['buyer_to_topic_s']['p95']} s "
                  f"({run['messages']} messages in {run['posts']} posts, load average {run['load_average']})")
        raise SystemExit(0)
    result = asyncio.run(main(options.conversations or 100, options.interval or 10.0, options.duration or 30.0))
    print(json.dumps(result, ensure_ascii=False, indent=2))
    for phase in ("steady", "burst"):
        numbers = result[phase]
        print(f"{phase}: buyer → topic p50/p99 {numbers['buyer_to_topic_ms']['p50']}/{numbers['buyer_to_topic_ms']['p99']} ms, "
              f"topic → buyer {numbers['topic_to_buyer_ms']['p50']}/{numbers['topic_to_buyer_ms']['p99']} ms "
              f"({numbers['messages']['per_second']} msg/s)")
