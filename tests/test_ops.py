"""The operations endpoints over HTTP: /healthz, /readyz (each dependency, with the reason when one fails),
/metrics (Prometheus text with the named series), and JSON logs with secrets still masked."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import pytest
from aiohttp.test_utils import TestClient, TestServer
from alembic.script import ScriptDirectory
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from bot.app import App
from bot.config import PROJECT_DIR
from bot.db.migrate import alembic_config
from bot.sandbox.telegram import TelegramSandbox
from tests.buyer import Buyer
from tests.conftest import REDIS_URL, SECRET, TOKEN, make_settings, running
from tests.crm_support import eventually
from tests.test_cli import service

SERIES = ("optobot_greeting_seconds", "optobot_catalog_render_seconds", "optobot_render_queue", "optobot_relay_seconds",
          "optobot_crm_outbox_depth", "optobot_crm_outbox_oldest_seconds", "optobot_amocrm_errors",
          "optobot_broadcast_messages", "optobot_sla_breaches", "optobot_telegram_reached_timestamp_seconds")


async def scrape(app: App) -> dict[str, float]:
    """``GET /metrics`` of a running app: every sample by name (labels folded into the name)."""
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"http://127.0.0.1:{app.http_port}/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain"), answer.text
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        samples[f"family:{family.name}"] = 1.0
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k != "le")
            samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return samples


async def test_metrics_after_a_greeting_hold_the_named_series(app: App, buyer: Buyer) -> None:
    before = await scrape(app)
    buyer.send("/start")
    await buyer.replies(2)
    await app.inbox.idle()
    after = await scrape(app)
    missing = [name for name in SERIES if f"family:{name}" not in after]
    assert not missing, missing
    assert after["optobot_greeting_seconds_count"] == before.get("optobot_greeting_seconds_count", 0) + 1
    assert after["optobot_crm_outbox_depth"] >= 1  # the new lead waits for amoCRM (not configured here)
    assert after["optobot_crm_outbox_oldest_seconds"] >= 0
    assert after["optobot_telegram_reached_timestamp_seconds"] > 0


async def test_readyz_reports_each_dependency(app: App) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as client:
        assert (await client.get("/healthz")).json() == {"ok": True}
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {
            "ok": True, "checks": {"database": "ok", "migrations": "ok", "telegram": "ok"}}, ready.text

        relay_head = ScriptDirectory.from_config(alembic_config()).get_revision("relay@head").revision
        async with app.db.begin() as session:  # a database behind the code's migrations
            await session.execute(text("UPDATE alembic_version SET version_num = '0200' WHERE version_num = :head"), {"head": relay_head})
        behind = await client.get("/readyz")
    assert behind.status_code == 503
    checks = behind.json()["checks"]
    assert checks["database"] == "ok" and "0200" in checks["migrations"] and "optobot db upgrade" in checks["migrations"]


async def test_readyz_names_a_redis_that_does_not_answer(sandbox: TelegramSandbox, sqlite_url: str, tmp_path: Path, renderer) -> None:
    settings = make_settings(sandbox, sqlite_url, tmp_path, REDIS_URL="redis://127.0.0.1:1/0")
    app = App(settings, renderer=renderer)  # only the HTTP side: nothing else touches the Redis that is not there
    try:
        async with TestClient(TestServer(app.web_app())) as client:
            ready = await client.get("/readyz")
            body = await ready.json()
    finally:
        await app.close()
    assert ready.status == 503 and body["checks"]["redis"].startswith("ConnectionError"), body


@pytest.mark.redis
async def test_readyz_pings_redis(sandbox: TelegramSandbox, sqlite_url: str, tmp_path: Path, renderer) -> None:
    settings = make_settings(sandbox, sqlite_url, tmp_path, REDIS_URL=REDIS_URL)
    async with running(settings, renderer) as app, httpx.AsyncClient() as client:
        ready = await client.get(f"http://127.0.0.1:{app.http_port}/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["redis"] == "ok", ready.text


async def test_json_logs_are_one_object_a_line_with_secrets_masked(tmp_path: Path, sandbox: TelegramSandbox) -> None:
    env = {"BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": sandbox.base_url, "WEBHOOK_SECRET": SECRET, "LOG_FORMAT": "json"}
    async with service(tmp_path, **env) as (base, log, _):
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.post(f"/webhooks/marquiz/{SECRET}", json={"contacts": {"name": "Анна", "phone": "79991234567"}})).status_code == 200
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    events = {line["event"] for line in lines}
    assert "app.started" in events and "marquiz.accepted" in events
    assert any(line.get("logger") == "aiohttp.access" and "/webhooks/marquiz/***" in line["event"] for line in lines), lines
    assert all("level" in line and "timestamp" in line for line in lines)
    assert SECRET not in log.read_text() and TOKEN not in log.read_text()


async def test_after_sigterm_readyz_answers_503_while_the_greeting_under_way_finishes(tmp_path: Path, sandbox: TelegramSandbox) -> None:
    """SIGTERM mid-greeting: ``/readyz`` says «stopping» at once, and the reply still in flight is sent before the exit."""
    buyer = Buyer(sandbox, user_id=1001, first_name="Анна")
    async with service(tmp_path, BOT_TOKEN=TOKEN, TELEGRAM_API_URL=sandbox.base_url, PYTHONPATH=str(PROJECT_DIR)) as (base, _, pid), \
            httpx.AsyncClient(base_url=base) as client:
        assert (await client.get("/readyz")).status_code == 200
        sandbox.set_delay(3, method="sendMessage")  # a slow Telegram: the greeting's messages are under way for a while
        buyer.send("/start")
        await buyer.reply(timeout=30)  # the first is sent, the next one is under way
        os.kill(pid, signal.SIGTERM)

        async def stopping() -> bool:
            ready = await client.get("/readyz")
            return ready.status_code == 503 and ready.json() == {"ok": False, "checks": {"instance": "stopping"}}

        await eventually(stopping, timeout=2)
        assert len(sandbox.messages(buyer.id, from_bot=True)) == 1  # answered while the greeting was still under way
    assert len(sandbox.messages(buyer.id, from_bot=True)) == 2  # finished before the exit (code 0)
