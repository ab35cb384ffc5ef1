"""Rate limits and concurrent workers: never more than N requests in any second; never twice, never out of order."""
from __future__ import annotations

import asyncio
import os
import time
import uuid

import pytest

from bot.crm.models import DONE
from bot.ratelimit import RedisWindow, Window
from tests.crm_support import FakeClock, amocrm, make_env, open_db  # noqa: F401  (fixtures)


def most_in_any_window(stamps: list[float], window: float = 1.0) -> int:
    stamps, best, start = sorted(stamps), 0, 0
    for end, at in enumerate(stamps):
        while at - stamps[start] > window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_the_window_never_allows_more_than_the_rate_in_any_second() -> None:
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds
        await asyncio.sleep(0)

    limiter = Window(6, clock=lambda: now[0], sleep=sleep)
    stamps: list[float] = []

    async def request(duration: float) -> None:
        async with limiter.slot():
            stamps.append(now[0])  # leaves
            now[0] += duration  # the answer takes this long (the window counts from here)
        await asyncio.sleep(0)

    await asyncio.gather(*(request(0.25 if i % 7 == 0 else 0.0) for i in range(60)))
    assert len(stamps) == 60
    assert most_in_any_window(stamps) == 6
    assert stamps[-1] < 13  # and it does not wait much more than it must


@pytest.mark.redis
async def test_the_redis_window_is_shared_by_every_instance() -> None:
    url = os.environ["OPTOBOT_TEST_REDIS_URL"]
    key = f"optobot:test:{uuid.uuid4().hex}"
    first, second = RedisWindow(url, key, 20), RedisWindow(url, key, 20)
    stamps: list[float] = []

    async def take(limiter: RedisWindow) -> None:
        async with limiter.slot():
            stamps.append(time.monotonic())

    try:
        await asyncio.gather(*(take(first if i % 2 else second) for i in range(50)))
    finally:
        await first.close()
        await second.close()
    assert most_in_any_window(stamps, 0.98) <= 20  # 20 ms of slack for the trip back from Redis
    assert stamps[-1] - min(stamps) >= 1.9


@pytest.mark.redis
async def test_a_redis_grant_held_past_its_hold_counts_from_when_it_is_given_back() -> None:
    """A held grant frees itself after ``hold`` (its process may have died), yet if its holder gives it back later
    (the requests left late), it counts a period from then like any other."""
    limiter = RedisWindow(os.environ["OPTOBOT_TEST_REDIS_URL"], f"optobot:test:{uuid.uuid4().hex}", 4, 1.0, hold=0.2)
    try:
        async with limiter.slot(4) as granted:
            assert granted == 4
            await asyncio.sleep(0.3)
            assert await asyncio.wait_for(limiter.take(1), 0.2) == 1  # the hold ran out: free again
        given_back = time.monotonic()
        await limiter.take(4)
        assert time.monotonic() - given_back >= 0.95  # the four given back count until a period later
    finally:
        await limiter.close()


async def test_two_instances_draining_together_send_each_note_once_in_order(database_url: str, amocrm) -> None:  # noqa: F811
    databases, envs = [], []
    clock = FakeClock()
    for _ in range(2):
        sessions = await open_db(database_url)
        databases.append(sessions)
        envs.append(await make_env(sessions, database_url, amocrm, clock=clock))
    first, second = envs
    try:
        leads = [await first.new_lead(tg_user_id=100 + i, first_name=f"Покупатель {i}") for i in range(12)]
        await asyncio.gather(first.drain(), second.drain())
        for round_ in range(3):
            for i, lead in enumerate(leads):
                await (first if i % 2 else second).say(lead.id, f"{lead.id}:{round_}")
            await asyncio.gather(first.drain(), second.drain(), first.drain(), second.drain())
        await asyncio.gather(first.drain(), second.drain())

        assert len(amocrm.account.leads) == 12
        for lead in leads:
            notes = first.notes((await first.lead(lead.id)).crm_lead_id)
            assert [n.split("\n")[1] for n in notes] == [f"{lead.id}:{r}" for r in range(3)]
        items = await first.items()
        assert {item.state for item in items} == {DONE}
    finally:
        for env in envs:
            await env.crm.close()
        for sessions in databases:
            await sessions.close()
