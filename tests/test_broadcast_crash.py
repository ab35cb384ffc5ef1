"""kill -9 in the middle of a broadcast, then resume: nobody twice, nobody lost (except "unknown" rows, counted)."""
from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from bot.app import App
from bot.config import PROJECT_DIR
from bot.sandbox.telegram import TelegramSandbox
from broadcasts import stats
from tests.broadcast_support import add_leads, bapp, broadcast, broadcast_settings, clock, create, deliveries, until_done  # noqa: F401
from tests.conftest import TOKEN

RECIPIENTS = 60


@pytest.mark.parametrize("broadcast_settings", [{"QUIET_HOURS": ""}])
async def test_killed_sender_resumes_without_duplicates(bapp: App, sandbox: TelegramSandbox, tmp_path: Path) -> None:
    sandbox.rate_limits(enabled=True)
    sandbox.set_delay(0.2, method="sendMessage")  # several calls are always under way when the kill lands
    user_ids = list(range(5000, 5000 + RECIPIENTS))
    await add_leads(bapp, sandbox, RECIPIENTS)
    broadcast_id = await create(bapp, text="Новинки для {{ first_name }}")

    env = {**os.environ, "BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": sandbox.base_url, "DATABASE_URL": bapp.settings.database_url,
           "DATA_DIR": str(tmp_path / "sender"), "QUIET_HOURS": "", "LOG_LEVEL": "WARNING", "PYTHONPATH": str(PROJECT_DIR)}
    sender = await asyncio.create_subprocess_exec(sys.executable, "-m", "broadcasts", "send", str(broadcast_id), cwd=tmp_path, env=env)
    try:
        await sandbox.wait_for_messages(user_ids[15], 1, timeout=60)  # a quarter is out: kill it mid-send
    finally:
        sender.send_signal(signal.SIGKILL)
        await sender.wait()
    assert sender.returncode == -signal.SIGKILL
    before = {d.id: d.state for d in await deliveries(bapp, broadcast_id)}
    assert "sending" in before.values() and "pending" in before.values(), before

    await until_done(bapp, broadcast_id)  # this process takes over once the dead sender's lease has expired (clock)

    rows = await deliveries(bapp, broadcast_id)
    got = {user_id: len(sandbox.messages(user_id, from_bot=True)) for user_id in user_ids}
    by_lead = {row.lead_id: row for row in rows}
    first_lead = min(by_lead)
    unknown = [row for row in rows if row.state == "unknown"]
    assert len(rows) == RECIPIENTS and {row.state for row in rows} <= {"sent", "unknown"}
    assert unknown and len(unknown) == sum(state == "sending" for state in before.values())
    for user_id, count in got.items():
        row = by_lead[first_lead + user_id - user_ids[0]]
        assert count == 1 if row.state == "sent" else count in (0, 1), (user_id, row.state, count)
    assert sum(got.values()) >= RECIPIENTS - len(unknown)
    assert (await broadcast(bapp, broadcast_id)).state == "finished"
    report = stats.report("en", await bapp.broadcasts.campaigns.stats(broadcast_id), "Europe/Moscow")
    assert f"unknown {len(unknown)}" in report
