"""Fixtures and helpers of the broadcast tests: the app with the broadcast workers held back
(tests drive them with ``tick()`` and an injectable clock), leads seeded in the database and
as users of the sandbox, and readers of what the sandbox delivered."""
from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bot.app import App
from bot.catalog.render import CatalogRenderer
from bot.db.models import Lead
from bot.sandbox.telegram import TelegramSandbox
from broadcasts.campaigns import CampaignSpec
from broadcasts.models import Broadcast, Delivery
from tests.conftest import make_settings

ADMIN = 777
MOSCOW = ZoneInfo("Europe/Moscow")


class FakeClock:
    """A UTC clock that moves only when told; starts at the next noon in Moscow (outside quiet hours)."""

    def __init__(self) -> None:
        tomorrow = datetime.now(MOSCOW).date() + timedelta(days=1)
        self.now = datetime.combine(tomorrow, time(12, 0), tzinfo=MOSCOW).astimezone(timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)

    def set_local(self, hour: int, minute: int = 0, zone: str = "Europe/Moscow") -> None:
        local = self.now.astimezone(ZoneInfo(zone))
        self.now = local.replace(hour=hour, minute=minute).astimezone(timezone.utc)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def broadcast_settings() -> dict[str, Any]:
    """Extra settings of ``bapp`` (override with ``@pytest.mark.parametrize("broadcast_settings", [{…}])``)."""
    return {}


@pytest.fixture
async def bapp(sandbox: TelegramSandbox, database_url: str, tmp_path: Path, renderer: CatalogRenderer, clock: FakeClock,
               broadcast_settings: dict[str, Any]) -> AsyncIterator[App]:
    """The app for broadcast tests, ADMIN_IDS = ``ADMIN``."""
    settings = make_settings(sandbox, database_url, tmp_path, ADMIN_IDS=str(ADMIN), **broadcast_settings)
    service = App(settings, renderer=renderer)
    service.workers = [w for w in service.workers if w not in service.broadcasts.workers]  # the test ticks them
    service.broadcasts.clock = clock
    async with service.running():
        yield service


async def add_leads(app: App, sandbox: TelegramSandbox, count: int, *, first_id: int = 5000, **fields: Any) -> list[int]:
    """``count`` leads who started the bot (users ``first_id``…), with ``fields``; their lead ids."""
    leads = []
    for index in range(count):
        user_id = first_id + index
        values = {"first_name": f"Покупатель{index}", "language": "ru", "stage": "catalog_sent",
                  "interests": {"category": ["shoes"], "volume": "100to300k", "channel": "marketplaces", "city": "Казань"}, **fields}
        sandbox.add_user(user_id, values["first_name"], language_code=values["language"], started=True)
        leads.append(Lead(tg_user_id=user_id, **values))
    async with app.db.begin() as session:
        session.add_all(leads)
    return [lead.id for lead in leads]


async def create(app: App, name: str = "Тест", *, segment: dict[str, Any] | None = None, text: Any = "Привет, {{ first_name }}!",
                 **spec: Any) -> int:
    """A running (or scheduled, with ``send_at``) campaign."""
    body = spec.pop("variants", None)
    campaign = CampaignSpec(name=name, segment=segment or {}, **({"variants": body} if body else {"message": {"text": text, **spec.pop("message", {})}}), **spec)
    return await app.broadcasts.campaigns.create(campaign)


async def deliveries(app: App, broadcast_id: int) -> list[Delivery]:
    async with app.db() as session:
        query = select(Delivery).where(Delivery.broadcast_id == broadcast_id).order_by(Delivery.id)
        return list((await session.execute(query)).scalars())


async def states(app: App, broadcast_id: int) -> Counter[str]:
    return Counter(d.state for d in await deliveries(app, broadcast_id))


async def broadcast(app: App, broadcast_id: int) -> Broadcast:
    async with app.db() as session:
        return await session.get(Broadcast, broadcast_id)


def received(sandbox: TelegramSandbox, user_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """The bot's messages in each user's chat."""
    return {user_id: sandbox.messages(user_id, from_bot=True) for user_id in user_ids}


async def until_done(app: App, broadcast_id: int, rounds: int = 50) -> None:
    """Tick until the broadcast has nothing due (a 429 or a retry may need more than one round)."""
    for _ in range(rounds):
        await app.broadcasts.tick()
        if not await app.broadcasts.engine.due():
            return
    raise AssertionError(f"broadcast {broadcast_id} still has work after {rounds} rounds")
