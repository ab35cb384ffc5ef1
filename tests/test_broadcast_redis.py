"""The broadcasts' rate limit shared through Redis by several senders (run with OPTOBOT_TEST_REDIS_URL)."""
from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from bot.ratelimit import RedisChatSpacing, RedisWindow, paced
from tests.broadcast_support import add_leads, bapp, broadcast_settings, clock, create, states, until_done  # noqa: F401
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.redis


async def test_two_senders_share_one_rate_and_one_pause() -> None:
    key = f"optobot-test:{uuid.uuid4().hex}"
    first, second = RedisWindow(REDIS_URL, key, *paced(40)), RedisWindow(REDIS_URL, key, *paced(40))
    try:
        taken = 0
        started = time.monotonic()

        async def consume(limiter: RedisWindow) -> None:
            nonlocal taken
            while taken < 30:
                taken += await limiter.take(1)

        await asyncio.gather(consume(first), consume(second))
        assert time.monotonic() - started >= (taken - first.limit) / 40 - 0.02  # 40/s between them, not each

        await first.pause(0.5)
        started = time.monotonic()
        await second.take(1)
        assert time.monotonic() - started >= 0.45  # a 429 seen by one sender stops the other too
    finally:
        await first.redis.delete(*first.keys)
        await first.close()
        await second.close()


@pytest.mark.parametrize("broadcast_settings", [{"REDIS_URL": REDIS_URL}])
async def test_the_app_sends_through_the_shared_rate_limit(bapp, sandbox) -> None:  # noqa: ANN001
    assert isinstance(bapp.broadcasts.engine.limiter, RedisWindow)
    sandbox.rate_limits(enabled=True)
    await add_leads(bapp, sandbox, 5)
    broadcast_id = await create(bapp)
    await until_done(bapp, broadcast_id)
    assert await states(bapp, broadcast_id) == {"sent": 5} and sandbox.throttles == []


async def test_two_instances_space_one_chat_together() -> None:
    """One message a second to a chat across instances: each booking of the same chat waits a second more."""
    prefix = f"optobot-test:{uuid.uuid4().hex}"
    first, second = RedisChatSpacing(REDIS_URL, prefix), RedisChatSpacing(REDIS_URL, prefix)
    try:
        delays = [await first.delay(42), await second.delay(42), await first.delay(42), await second.delay(7)]
        assert delays[0] == pytest.approx(0, abs=0.05)
        assert delays[1] == pytest.approx(1.0, abs=0.1) and delays[2] == pytest.approx(2.0, abs=0.1)
        assert delays[3] == pytest.approx(0, abs=0.05)  # another chat is not held up
    finally:
        await first.redis.delete(f"{prefix}:42", f"{prefix}:7")
        await first.close()
        await second.close()
