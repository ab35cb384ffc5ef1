"""The background-loop helper: rounds, wake-ups, logged failures with a capped back-off, graceful stop."""
from __future__ import annotations

import asyncio
import time

import pytest
from structlog.testing import capture_logs

from bot.loops import Loop


async def test_a_round_that_found_work_is_followed_at_once_and_stop_ends_the_loop() -> None:
    stop, rounds = asyncio.Event(), []

    async def round() -> bool:
        rounds.append(time.monotonic())
        if len(rounds) == 3:
            stop.set()
        return True  # more work waiting: no pause although `every` is long

    await asyncio.wait_for(Loop("busy", round, every=60).run(stop), 5)
    assert len(rounds) == 3


async def test_an_idle_loop_waits_for_a_wake_up_and_stops_at_once() -> None:
    stop, wake, ran = asyncio.Event(), asyncio.Event(), asyncio.Queue[int]()

    async def round() -> None:
        ran.put_nowait(1)

    task = asyncio.create_task(Loop("idle", round, every=60, wake=wake).run(stop))
    await asyncio.wait_for(ran.get(), 5)
    wake.set()
    await asyncio.wait_for(ran.get(), 5)  # woken long before `every`
    stop.set()
    await asyncio.wait_for(task, 5)  # no round under way: returns without waiting out `every`


async def test_a_failing_round_is_retried_after_a_pause_that_doubles_up_to_the_cap() -> None:
    stop, calls = asyncio.Event(), []

    async def flaky() -> None:
        calls.append(time.monotonic())
        if len(calls) == 5:
            stop.set()
        if len(calls) <= 4:
            raise RuntimeError(f"failure {len(calls)}")

    loop = Loop("flaky", flaky, every=0.02, max_backoff=0.1)
    with capture_logs() as logs:
        await asyncio.wait_for(loop.run(stop), 5)
    failed = [entry for entry in logs if entry["event"] == "loop.round_failed"]
    assert [(entry["loop"], entry["failures"], entry["retry_in"]) for entry in failed] == [
        ("flaky", 1, 0.04), ("flaky", 2, 0.08), ("flaky", 3, 0.1), ("flaky", 4, 0.1)]
    gaps = [later - earlier for earlier, later in zip(calls, calls[1:])]
    assert [gap >= pause - 0.005 for gap, pause in zip(gaps, (0.04, 0.08, 0.1, 0.1))] == [True] * 4
    assert loop.failures == 0  # the fifth round succeeded


async def test_once_runs_one_round_and_lets_its_error_through() -> None:
    async def round() -> bool:
        raise ValueError("bad round")

    with pytest.raises(ValueError, match="bad round"):
        await Loop("once", round, every=1).once()
