"""Helpers of the analytics tests: the whole service with the operator chat, the amoCRM sandbox (its
webhooks reaching the service) and an admin; buyers arriving by every path; moving deals in amoCRM; and
setting when things happened once the real code paths have recorded them ("today" is in Moscow)."""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select, update

from bot.app import App
from bot.catalog.render import CatalogRenderer
from bot.config import Settings
from bot.db.models import Lead
from bot.relay.models import RelayWait
from bot.sandbox.amocrm import AmoSandbox
from bot.sandbox.telegram import TelegramSandbox
from tests.conftest import SECRET
from tests.crm_support import amocrm, eventually  # noqa: F401  (amocrm: a fixture the analytics tests use)
from tests.relay_support import relay_settings

MOSCOW = ZoneInfo("Europe/Moscow")
TODAY = datetime.now(MOSCOW).date()
ANSWERS = [
    {"q": "Какая категория товаров вас интересует?", "a": ["Обувь"]},
    {"q": "Какой объём закупки планируете?", "a": "100–300 тыс ₽"},
    {"q": "Где вы продаёте?", "a": "Маркетплейсы"},
    {"q": "Ваш город доставки?", "a": "Казань"},
]


def moment(days_ago: int, hour: int, minute: int = 0) -> datetime:
    """A moment of a day before today, in Moscow, as UTC."""
    return datetime.combine(TODAY - timedelta(days=days_ago), time(hour, minute), tzinfo=MOSCOW).astimezone(UTC)


def day(days_ago: int) -> date:
    return TODAY - timedelta(days=days_ago)


def analytics_settings(sandbox: TelegramSandbox, database_url: str, tmp_path: Path, amocrm: AmoSandbox | None = None,
                       **overrides: Any) -> Settings:
    """The operator chat (Ivan, Olga — the admin and head of sales — and Petr), amoCRM if given, no quiet hours."""
    crm = {"AMOCRM_BASE_URL": amocrm.base_url, "AMOCRM_ACCESS_TOKEN": amocrm.long_lived_token, "AMOCRM_RPS": 50} if amocrm else {}
    return relay_settings(sandbox, database_url, tmp_path, **{"QUIET_HOURS": "", "REPORT_SCHEDULE": "off", **crm, **overrides})


@pytest.fixture
async def app(sandbox: TelegramSandbox, database_url: str, tmp_path: Path, renderer: CatalogRenderer, amocrm: AmoSandbox) -> AsyncIterator[App]:
    """The whole service; amoCRM's webhooks reach it; the broadcasts and the amoCRM checks run when a test says."""
    service = App(analytics_settings(sandbox, database_url, tmp_path, amocrm), renderer=renderer)
    service.workers = [w for w in service.workers if w not in (*service.broadcasts.workers, service.crm.checks.run)]
    async with service.running():
        amocrm.webhook_urls.append(f"http://127.0.0.1:{service.http_port}/webhooks/amocrm/{SECRET}")
        yield service


async def marquiz(app: App, name: str, phone: str, utm: dict[str, str] | None = None, answers: list[dict[str, Any]] = ANSWERS) -> tuple[int, str]:
    """A website quiz through the Marquiz webhook: its lead id and the payload of its start link."""
    body = {"contacts": {"name": name, "phone": phone}, "quiz": {"id": "q1", "name": "Подбор"}, "answers": answers,
            "extra": {"utm": utm or {}}, "created": f"2026-01-01T10:00:{phone[-2:]}Z"}  # one submission per phone
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as client:
        response = await client.post(f"/webhooks/marquiz/{SECRET}", content=json.dumps(body, ensure_ascii=False),
                                     headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    answer = response.json()
    return answer["lead_id"], answer["start_link"].split("?start=", 1)[1]


async def lead_of(app: App, tg_user_id: int) -> Lead:
    await app.inbox.idle()
    async with app.db() as session:
        return (await session.execute(select(Lead).where(Lead.tg_user_id == tg_user_id))).scalar_one()


async def crm_id(app: App, lead_id: int) -> int:
    """The lead's amoCRM deal, once the outbox has created it."""
    async def created() -> bool:
        async with app.db() as session:
            return (await session.get(Lead, lead_id)).crm_lead_id is not None
    await eventually(created, timeout=20)
    async with app.db() as session:
        return (await session.get(Lead, lead_id)).crm_lead_id


async def move(app: App, amocrm: AmoSandbox, lead_id: int, stage: str) -> None:
    """A manager drags the deal in amoCRM; the webhook moves the lead here."""
    account, deal = amocrm.account, await crm_id(app, lead_id)
    if stage == "lost":
        statuses = await amocrm.move_lead(deal, 143, account.leads[deal]["pipeline_id"])
    else:
        pipeline, status = app.crm.config.stages[stage]
        statuses = await amocrm.move_lead(deal, account.status_id(pipeline, status))
    assert statuses == [200]
    async with app.db() as session:
        assert (await session.get(Lead, lead_id)).stage == stage


async def set_lead(app: App, lead_id: int, **columns: Any) -> None:
    """When things happened (and what the bot measured), once the real paths have recorded them."""
    async with app.db.begin() as session:
        await session.execute(update(Lead).where(Lead.id == lead_id).values(**columns))


async def open_wait(app: App, lead_id: int) -> RelayWait:
    async def opened() -> bool:
        async with app.db() as session:
            return (await session.execute(select(RelayWait).where(RelayWait.lead_id == lead_id, RelayWait.closed_at.is_(None)))).first() is not None
    await eventually(opened)
    async with app.db() as session:
        return (await session.execute(select(RelayWait).where(RelayWait.lead_id == lead_id, RelayWait.closed_at.is_(None)))).scalar_one()



async def seed_history(db: Any) -> dict[str, int]:
    """A small history written straight to the tables (for what is not about how it is recorded): five leads
    of the last week and one of the week before, a deal sold, answered questions, spend. Its figures:
    arrived 5, key stage 2 (40 %), previous period 1 arrived, none at the key stage."""
    from bot.analytics.models import AdSpend

    leads = [
        Lead(first_name="Анна", tg_user_id=2001, arrival="quiz", source="yandex", utm={"source": "yandex", "campaign": "shoes"},
             interests={"category": ["shoes"], "volume": "100to300k"}, stage="main_batch_sent", furthest_stage="main_batch_sent",
             created_at=moment(6, 10), key_stage_at=moment(4, 10), greeted_at=moment(6, 10), quiz_completed_at=moment(6, 10),
             catalog_sent_at=moment(6, 11), first_reply_ms=40, deal_price=150_000, responsible_user_id=9001),
        Lead(first_name="Борис", arrival="quiz", source="vk", utm={"source": "vk", "name": "spring"}, interests={"category": ["kids"]},
             stage="qualified", created_at=moment(6, 12), quiz_completed_at=moment(6, 12)),
        Lead(first_name="Вера", tg_user_id=2003, arrival="ad", source="vk", utm={"source": "vk", "campaign": "spring"},
             interests={"category": ["shoes", "kids"]}, stage="lost", furthest_stage="test_batch_sent", created_at=moment(3, 15),
             key_stage_at=moment(2, 15), greeted_at=moment(3, 15), first_reply_ms=60, responsible_user_id=9002),
        Lead(first_name="Глеб", tg_user_id=2004, arrival="cold", created_at=moment(1, 9), greeted_at=moment(1, 9), first_reply_ms=200),
        Lead(first_name="Дина", tg_user_id=2005, arrival="phone", source="marquiz", interests={"category": ["shoes"]},
             created_at=moment(0, 0, 30), greeted_at=moment(0, 0, 30), first_reply_ms=100),
        Lead(first_name="Егор", tg_user_id=2006, arrival="cold", created_at=moment(9, 18), greeted_at=moment(9, 18), first_reply_ms=50),
    ]
    async with db.begin() as session:
        session.add_all(leads)
        await session.flush()
        anna, vera = leads[0], leads[2]
        session.add_all([
            RelayWait(lead_id=vera.id, started_at=moment(3, 16), in_hours=True, due_at=moment(3, 16), escalate_at=moment(3, 16),
                      closed_at=moment(3, 16) + timedelta(seconds=30), answered_by=502, answered_by_name="Ольга Кузнецова", response_seconds=30),
            RelayWait(lead_id=anna.id, started_at=moment(5, 21), in_hours=False, due_at=moment(5, 21), escalate_at=moment(5, 21),
                      closed_at=moment(5, 21) + timedelta(hours=12), answered_by=501, answered_by_name="Иван Смирнов", response_seconds=1800),
            AdSpend(day=day(6), source="yandex", campaign="shoes", amount=300_000),
            AdSpend(day=day(3), source="vk", campaign="spring", amount=150_000),
        ])
    return {lead.first_name: lead.id for lead in leads}
