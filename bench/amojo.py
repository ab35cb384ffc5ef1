"""amoCRM chat latency: ``python -m bench.amojo [--conversations 100] [--interval 10] [--duration 30]``.

The whole service runs with the chat channel on, against the sandbox Bot API in a separate process and the
sandbox amoCRM (REST at 7 requests/s, the Chats API) in this one. ``--conversations`` known leads (with a
phone) first get their amoCRM deal, contact and chat, each linked (not measured). Then for ``--duration``
seconds every buyer writes every ``--interval`` seconds on average (Poisson arrivals) and a manager answers
each message from amoCRM's chat panel 1–3 s later. Measured on the machine's one monotonic clock:
- buyer → Chats API: from the ``getUpdates`` response that delivered the buyer's message to the bot, to the
  message's ``POST /v2/origin/custom/{scope_id}`` arriving at the sandbox amoCRM;
- hook → Telegram: from amoCRM's hook leaving the sandbox to the bot's ``sendMessage`` arriving at the Bot API.
The load average of the machine is reported with the figures (the machine is shared). The sandbox amoCRM shares
the service's event loop here (its clock stamps the Chats API calls), which makes the figures pessimistic.
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

from bench.common import percentile
from bench.journey import SECRET, TOKEN, RemoteSandbox
from bot.app import App
from bot.config import load_settings
from bot.crm import channel
from bot.db.base import utcnow
from bot.db.models import Lead
from bot.journal import LEAD_CREATED
from bot.logs import setup_logging
from bot.sandbox.amocrm import start_sandbox_amocrm

FIRST_BUYER = 700_000
TARGET_P99_MS = 200


def conversation(buyer: int) -> str:
    return f"tg-{buyer}"


async def prepare(app: App, sandbox: RemoteSandbox, amocrm: Any, buyers: range) -> None:
    """Deals, contacts and linked chats for every buyer (each says hello once)."""
    async with app.db.begin() as session:
        for buyer in buyers:
            lead = Lead(tg_user_id=buyer, first_name=f"Покупатель {buyer}", phone=f"+7998{buyer:07d}", greeted_at=utcnow(),
                        quiz_completed_at=utcnow(), stage="qualified", interests={"category": ["shoes"], "city": "Казань"})
            session.add(lead)
            await session.flush()
            await app.journal.event(session, lead, LEAD_CREATED, via="telegram")
    await asyncio.gather(*(sandbox("send_text", user_id=buyer, text="Здравствуйте!") for buyer in buyers))
    deadline = time.monotonic() + 600
    while not all((chat := amocrm.chats.chat(conversation(b))) and chat.contact_id and chat.messages for b in buyers):
        if time.monotonic() > deadline:
            raise TimeoutError("the chats were not ready in 10 minutes")
        await asyncio.sleep(0.5)


class Load:
    def __init__(self, sandbox: RemoteSandbox, amocrm: Any) -> None:
        self.sandbox = sandbox
        self.amocrm = amocrm
        self.written: list[tuple[int, int]] = []  # (buyer, Telegram message id)
        self.replies: list[tuple[int, str]] = []  # (buyer, the reply's text)

    async def buyer(self, buyer: int, interval: float, until: float) -> None:
        answers, number = [], 0
        while (pause := random.expovariate(1 / interval)) < until - time.monotonic():
            await asyncio.sleep(pause)
            number += 1
            message = await self.sandbox("send_text", user_id=buyer, text=f"Вопрос {number}")
            self.written.append((buyer, message["message_id"]))
            answers.append(asyncio.create_task(self.answer_later(buyer, number)))
        await asyncio.gather(*answers)

    async def answer_later(self, buyer: int, number: int) -> None:
        await asyncio.sleep(random.uniform(1, 3))
        text = f"Ответ {number} для {buyer}"
        status, _ = await self.amocrm.chats.reply(conversation(buyer), text)
        assert status == 200, status
        self.replies.append((buyer, text))

    async def done(self, since: int) -> None:
        """Until every message is in amoCRM's chat and every reply was sent to its buyer."""
        while True:
            arrived = {m["msgid"] for b in {b for b, _ in self.written} for m in self.amocrm.chats.chat(conversation(b)).messages}
            sent = {c["params"]["text"] for c in await self.sandbox("calls", offset=since, method="sendMessage")}
            if all(f"{conversation(b)}-{m}" in arrived for b, m in self.written) and all(t in sent for _, t in self.replies):
                return
            await asyncio.sleep(0.2)

    async def latencies(self, since: int) -> tuple[list[float], list[float]]:
        delivered: dict[tuple[int, int], float] = {}
        for call in await self.sandbox("calls", offset=since, method="getUpdates"):
            updates = json.loads(call["result"]) if isinstance(call["result"], str) else call["result"] or []
            for update in updates:
                if "message" in update:
                    delivered.setdefault((update["message"]["chat"]["id"], update["message"]["message_id"]), call["finished_at"])
        inbound = []
        for buyer, message_id in self.written:
            stored = next(m for m in self.amocrm.chats.chat(conversation(buyer)).messages if m["msgid"] == f"{conversation(buyer)}-{message_id}")
            inbound.append(stored["received_at"] - delivered[(buyer, message_id)])
        sent_at = {c["params"]["text"]: c["started_at"] for c in await self.sandbox("calls", offset=since, method="sendMessage")}
        outbound = []
        for buyer, text in self.replies:
            hook = next(m for m in self.amocrm.chats.chat(conversation(buyer)).messages if m.get("text") == text)
            outbound.append(sent_at[text] - hook["hook_at"])
        return inbound, outbound


def figures(values: list[float]) -> dict[str, float]:
    return {f"p{p}": round(percentile(values, p / 100) * 1000, 1) for p in (50, 99)}


async def main(conversations: int, interval: float, duration: float, database_url: str | None = None) -> dict[str, Any]:
    setup_logging("WARNING")
    sandbox = await RemoteSandbox.start()
    amocrm, amocrm_url, token = await start_sandbox_amocrm(rate_limit=7)
    registered = amocrm.chats.register_channel("http://127.0.0.1:9/webhooks/amojo/:scope_id")
    buyers = range(FIRST_BUYER, FIRST_BUYER + conversations)
    try:
        for buyer in buyers:
            await sandbox("add_user", user_id=buyer, first_name=f"Покупатель {buyer}")
        with tempfile.TemporaryDirectory(prefix="bench-amojo-") as workdir:
            settings = load_settings(
                _env_file=None, BOT_TOKEN=TOKEN, TELEGRAM_API_URL=sandbox.base_url, WEBHOOK_SECRET=SECRET, HTTP_PORT=0,
                DATABASE_URL=database_url or f"sqlite+aiosqlite:///{Path(workdir) / 'bench.sqlite3'}", DATA_DIR=workdir,
                AMOCRM_BASE_URL=amocrm_url, AMOCRM_ACCESS_TOKEN=token, AMOCRM_CHANNEL_ID=registered.id,
                AMOCRM_CHANNEL_SECRET=registered.secret, AMOJO_BASE_URL=amocrm_url, WORKING_HOURS="00:00-24:00", WORKING_DAYS="1-7",
            )
            async with App(settings).running() as app:
                registered.hook_url = f"http://127.0.0.1:{app.http_port}/webhooks/amojo/:scope_id"
                await channel.connect(app.db, app.crm.client, app.crm.chats_api, "Telegram")
                app.crm.wake()
                prepared = time.monotonic()
                await prepare(app, sandbox, amocrm, buyers)
                prepare_s = time.monotonic() - prepared
                load = Load(sandbox, amocrm)
                since = (await sandbox("state"))["calls"]
                started = time.monotonic()
                await asyncio.gather(*(load.buyer(buyer, interval, started + duration) for buyer in buyers))
                await load.done(since)
                load_average = os.getloadavg()
                inbound, outbound = await load.latencies(since)
    finally:
        await sandbox.close()
        await amocrm.close()
    p99 = max(figures(inbound)["p99"], figures(outbound)["p99"])
    return {"database": "postgresql" if database_url else "sqlite", "conversations": conversations, "interval_s": interval,
            "duration_s": duration, "prepare_s": round(prepare_s, 1),
            "messages": len(inbound), "replies": len(outbound),
            "buyer_to_chats_api_ms": figures(inbound), "hook_to_telegram_ms": figures(outbound),
            "load_average": [round(x, 2) for x in load_average],
            "target": f"p99 < {TARGET_P99_MS} ms", "meets_target": p99 < TARGET_P99_MS}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=100)
    parser.add_argument("--interval", type=float, default=10.0, help="mean seconds between one buyer's messages")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of steady load")
    parser.add_argument("--database-url", help="an EMPTY PostgreSQL database (postgresql+asyncpg://…); default a fresh SQLite file")
    options = parser.parse_args()
    result = asyncio.run(main(options.conversations, options.interval, options.duration, options.database_url))
    print(json.dumps(result, ensure_ascii=False, indent=2))
