"""Several instances: the heartbeat table, a second instance on PostgreSQL refused without REDIS_URL (one line),
``optobot run --role web|worker|all``, and SIGTERM: no new work, the broadcast lease released at once, a bounded exit."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from bot.app import App
from bot.catalog.render import CatalogRenderer
from bot.config import PROJECT_DIR, ConfigError
from bot.db import migrate
from bot.db.base import utcnow
from bot.db.models import Instance
from bot.db.session import open_database
from bot.sandbox.telegram import TelegramSandbox
from tests.broadcast_support import add_leads, bapp, broadcast, broadcast_settings, clock, create, deliveries  # noqa: F401
from tests.conftest import REDIS_URL, SECRET, TOKEN, _admin, _pg_url, make_settings, running
from tests.test_cli import environment


async def rows(app: App) -> list[Instance]:
    async with app.db() as session:
        return list((await session.scalars(select(Instance))).all())


async def test_a_running_instance_beats_and_leaves(sandbox: TelegramSandbox, database_url: str, tmp_path: Path,
                                                   renderer: CatalogRenderer) -> None:
    async with running(make_settings(sandbox, database_url, tmp_path), renderer) as app:
        (row,) = await rows(app)
        assert (row.id, row.host, row.pid, row.role) == (app.presence.id, socket.gethostname(), os.getpid(), "all")
        await app.presence.beat()
        assert (await rows(app))[0].seen_at > row.seen_at
    db = open_database(database_url)
    try:
        async with db() as session:
            assert (await session.scalars(select(Instance))).all() == []  # left at exit
    finally:
        await db.close()


@pytest.mark.postgres
async def test_a_second_instance_on_postgresql_without_redis_refuses_to_start(
        sandbox: TelegramSandbox, postgres_url: str, tmp_path: Path, renderer: CatalogRenderer) -> None:
    async with running(make_settings(sandbox, postgres_url, tmp_path), renderer) as first:
        second = App(make_settings(sandbox, postgres_url, tmp_path), renderer=renderer)
        try:
            with pytest.raises(ConfigError) as refused:
                await second.start()
        finally:
            await second.close()
        message = str(refused.value)
        assert message.startswith("optobot: REDIS_URL: another instance runs on this database") and "\n" not in message
        assert f"pid {os.getpid()}, role all" in message

        env = environment(tmp_path, BOT_TOKEN=TOKEN, TELEGRAM_API_URL=sandbox.base_url, DATABASE_URL=postgres_url, HTTP_PORT="0",
                          LOG_LEVEL="WARNING")
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "run", "--role", "worker", cwd=tmp_path, env=env,
                                                       stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 2, err
        lines = err.decode().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("optobot: REDIS_URL:") and "Traceback" not in err.decode(), err
        assert [row.id for row in await rows(first)] == [first.presence.id]


@pytest.mark.postgres
async def test_a_dead_instance_on_this_host_does_not_count(sandbox: TelegramSandbox, postgres_url: str, tmp_path: Path,
                                                          renderer: CatalogRenderer) -> None:
    gone = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await gone.wait()  # its pid is free now (kill -9 leaves a row like this one behind)
    app = App(make_settings(sandbox, postgres_url, tmp_path), renderer=renderer)
    try:
        async with app.db.begin() as session:
            session.add(Instance(id="dead", host=socket.gethostname(), pid=gone.pid, role="all", started_at=utcnow(), seen_at=utcnow()))
        await app.start()
        assert {row.id for row in await rows(app)} == {"dead", app.presence.id}
    finally:
        await app.close()


@pytest.mark.postgres
@pytest.mark.redis
async def test_with_redis_several_instances_run_side_by_side(sandbox: TelegramSandbox, postgres_url: str, tmp_path: Path,
                                                             renderer: CatalogRenderer) -> None:
    settings = make_settings(sandbox, postgres_url, tmp_path, REDIS_URL=REDIS_URL)
    async with running(settings, renderer) as first, App(settings, renderer=renderer, role="worker").running() as second:
        assert {row.id for row in await rows(first)} == {first.presence.id, second.presence.id}


async def test_roles_split_http_and_updates_from_the_background_work(sandbox: TelegramSandbox, sqlite_url: str, tmp_path: Path,
                                                                     renderer: CatalogRenderer) -> None:
    settings = make_settings(sandbox, sqlite_url, tmp_path)
    web = App(settings, renderer=renderer, role="web")
    try:
        assert web.background() == [web.presence.run, web.sender.resume.run, web.inbox.replay.run]  # updates, no workers
    finally:
        await web.close()
    async with App(settings, renderer=renderer, role="worker").running() as worker:
        assert worker.background() == [worker.presence.run, worker.sender.resume.run, *worker.workers] and len(worker.workers) >= 3
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{worker.http_port}") as client:
            assert (await client.post(f"/webhooks/marquiz/{SECRET}", json={"contacts": {"phone": "79991234567"}})).status_code == 404
            assert (await client.get("/metrics")).status_code == 200
        assert not [call for call in sandbox.calls if call.method in ("getUpdates", "deleteWebhook", "setWebhook")]


@pytest.mark.parametrize("broadcast_settings", [{"QUIET_HOURS": ""}])
async def test_sigterm_during_a_broadcast_releases_its_lease_at_once(bapp: App, sandbox: TelegramSandbox, tmp_path: Path) -> None:
    sandbox.set_delay(0.1, method="sendMessage")
    user_ids = list(range(5000, 5040))
    await add_leads(bapp, sandbox, len(user_ids))
    broadcast_id = await create(bapp, text="Новинки для {{ first_name }}")
    await bapp.presence.leave()  # bapp only prepared the database: the subprocess is the one instance
    env = {**environment(tmp_path, BOT_TOKEN=TOKEN, TELEGRAM_API_URL=sandbox.base_url, DATABASE_URL=bapp.settings.database_url,
                         QUIET_HOURS="", BROADCAST_RATE="4", HTTP_PORT="0", LOG_LEVEL="WARNING"), "PYTHONPATH": str(PROJECT_DIR)}
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "run", "--role", "worker", cwd=tmp_path, env=env)
    try:
        await sandbox.wait_for_messages(user_ids[3], 1, timeout=60)
        assert (await broadcast(bapp, broadcast_id)).owner is not None
    finally:
        process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 40) == 0

    row = await broadcast(bapp, broadcast_id)
    assert row.state == "running" and row.owner is None and row.lease_until is None  # released, not left to expire
    states = {d.state for d in await deliveries(bapp, broadcast_id)}
    assert "sending" not in states and {"sent", "pending"} <= states, states


@pytest.mark.postgres
async def test_instances_starting_together_migrate_one_after_the_other() -> None:
    name = f"optobot_m_{uuid.uuid4().hex[:10]}"
    await _admin(f'CREATE DATABASE "{name}"')
    engines = [open_database(_pg_url(name)) for _ in range(3)]
    try:
        await asyncio.wait_for(asyncio.gather(*(migrate.upgrade(db.engine) for db in engines)), 60)  # without the lock: stuck
        assert await migrate.current(engines[0].engine) == migrate.heads()
    finally:
        for db in engines:
            await db.close()
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
