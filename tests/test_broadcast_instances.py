"""Two instances on one PostgreSQL and one Redis send two broadcasts at once (2 × 1,000 recipients): the total
rate measured at the sandbox stays within the configured one, nobody gets a message twice, nobody is left out;
one instance (a real ``optobot run`` process) is killed with kill -9 mid-broadcast and the other finishes its broadcast."""
from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from bot.app import App
from bot.catalog.render import CatalogRenderer
from bot.config import PROJECT_DIR
from bot.db.base import utcnow
from bot.sandbox.amocrm.server import peak_rate
from bot.sandbox.telegram import TelegramSandbox
from broadcasts import store
from broadcasts.engine import IN_FLIGHT, LEASE
from broadcasts.models import SENT, UNKNOWN
from tests.broadcast_support import add_leads, broadcast, create, deliveries
from tests.conftest import REDIS_URL, TOKEN, make_settings
from tests.crm_support import eventually
from tests.test_cli import environment

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

RATE = 150  # BROADCAST_PAID: messages/s of all broadcasts of all instances together
RECIPIENTS = 1000  # per broadcast


@pytest.fixture
def sandbox() -> Iterator[TelegramSandbox]:
    """The sandbox on its own event loop in a thread, so that the survivor's work in the test's loop does not hold up
    its stamps (the rate is measured there). The test calls only its plain methods (add_user, rate_limits, calls…)."""
    server, loop = TelegramSandbox(token=TOKEN), asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="sandbox", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(host="127.0.0.1", port=0), loop).result(10)
    yield server
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


@pytest.fixture
async def survivor(sandbox: TelegramSandbox, postgres_url: str, tmp_path: Path, renderer: CatalogRenderer) -> AsyncIterator[App]:
    """The instance that lives: a worker whose broadcast loop the test starts, on a clock it can move past a lease."""
    settings = make_settings(sandbox, postgres_url, tmp_path, REDIS_URL=REDIS_URL, BROADCAST_PAID=str(RATE), QUIET_HOURS="")
    app = App(settings, renderer=renderer, role="worker")
    app.workers = [w for w in app.workers if w != app.broadcasts.serve]
    async with app.running():
        yield app


async def test_two_instances_share_the_rate_and_the_survivor_finishes(survivor: App, sandbox: TelegramSandbox, tmp_path: Path) -> None:
    sandbox.rate_limits(enabled=True, paid_per_second=RATE * 1.1)  # a breach of the configured rate shows as 429s
    first_users, second_users = range(5000, 5000 + RECIPIENTS), range(7000, 7000 + RECIPIENTS)
    await add_leads(survivor, sandbox, RECIPIENTS, first_id=first_users[0], language="ru")
    await add_leads(survivor, sandbox, RECIPIENTS, first_id=second_users[0], language="en")
    doomed_id = await create(survivor, "Первая", segment={"language": ["ru"]}, text="Новинки для {{ first_name }}")
    kept_id = await create(survivor, "Вторая", segment={"language": ["en"]}, text="News for {{ first_name }}")
    engine = survivor.broadcasts.engine
    async with survivor.db.begin() as session:  # the survivor holds the second one, so the process takes the first
        assert await store.claim(session, kept_id, engine.owner, utcnow(), LEASE)

    killed = tmp_path / "killed"
    killed.mkdir()
    env = {**environment(killed, BOT_TOKEN=TOKEN, TELEGRAM_API_URL=sandbox.base_url, DATABASE_URL=survivor.settings.database_url,
                         REDIS_URL=REDIS_URL, BROADCAST_PAID=str(RATE), QUIET_HOURS="", HTTP_PORT="0", LOG_LEVEL="WARNING"),
           "PYTHONPATH": str(PROJECT_DIR)}
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "run", "--role", "worker", cwd=killed, env=env)

    def sends_of(users: range) -> list[float]:
        return [c.started_at for c in sandbox.calls if c.method == "sendMessage" and c.chat_id in users]

    shift = [timedelta(0)]
    survivor.broadcasts.clock = lambda: utcnow() + shift[0]
    stop = asyncio.Event()
    serving = None
    try:
        await eventually(lambda: sends_of(first_users), timeout=60)  # the process is sending the first broadcast
        owner = (await broadcast(survivor, doomed_id)).owner
        assert owner is not None and owner != engine.owner
        serving = asyncio.create_task(survivor.broadcasts.serve(stop))  # both instances send now
        await eventually(lambda: len(sends_of(second_users)) >= RATE, timeout=60)
    finally:
        process.send_signal(signal.SIGKILL)  # no release: its lease stays until it expires
        await process.wait()
        killed_at = time.perf_counter()
    try:
        before = {d.lead_id: d.state for d in await deliveries(survivor, doomed_id)}
        assert "pending" in before.values(), "the first broadcast ended before the kill"
        assert (await broadcast(survivor, doomed_id)).owner == owner
        shift[0] = LEASE + LEASE / 30  # the survivor's clock past the dead instance's lease (instead of waiting 30 s)

        async def finished() -> bool:
            return [(await broadcast(survivor, i)).state for i in (doomed_id, kept_id)] == ["finished", "finished"]

        await eventually(finished, timeout=90)
    finally:
        stop.set()
        if serving is not None:
            await serving

    sends = sorted((c for c in sandbox.calls if c.method == "sendMessage"), key=lambda c: c.started_at)
    assert sandbox.throttles == []  # never over the sandbox's limit, in total
    # In any 1 s: the configured rate (grants count from when the requests leave, so at most a window's limit leaves
    # in any window), plus one window's worth for the time between leaving and the sandbox's stamp. Counted from the
    # grant instead, a slow write of the rows bunched them to 240–300.
    assert peak_rate([c.started_at for c in sends]) <= RATE + engine.limiter.limit
    for broadcast_id, users in ((doomed_id, first_users), (kept_id, second_users)):
        rows = await deliveries(survivor, broadcast_id)
        got = {u: len(sandbox.messages(u, from_bot=True)) for u in users}
        by_lead = {row.lead_id: row for row in rows}
        leads = sorted(by_lead)
        assert len(rows) == RECIPIENTS and {row.state for row in rows} <= {SENT, UNKNOWN}
        for user_id, lead_id in zip(users, leads, strict=True):
            state = by_lead[lead_id].state  # unknown: in flight when the process died, reported and never resent
            assert got[user_id] == 1 if state == SENT else got[user_id] in (0, 1), (broadcast_id, user_id, state, got[user_id])
    unknown = sum(d.state == UNKNOWN for d in await deliveries(survivor, doomed_id))
    assert unknown <= IN_FLIGHT and unknown == sum(state == "sending" for state in before.values())
    assert {d.state for d in await deliveries(survivor, kept_id)} == {SENT}
    second_from = sends_of(second_users)[0]
    both = [c.chat_id in first_users for c in sends if second_from <= c.started_at <= killed_at]
    assert any(both) and not all(both)  # the two instances were sending at the same time
