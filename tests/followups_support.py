"""Fixtures and helpers of the follow-up tests: the whole service with an operator chat and the sandbox amoCRM (with
the deal fields the stage messages show), deals moved by a manager, an injectable clock."""
from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select

from bot.app import App
from bot.catalog.render import CatalogRenderer
from bot.db.models import Lead
from bot.followups.models import FollowUp
from bot.sandbox.amocrm import AmoSandbox
from bot.sandbox.telegram import TelegramSandbox
from tests.buyer import Buyer
from tests.conftest import SECRET
from tests.relay_support import FakeClock, known_lead, relay_settings, running

MOSCOW = ZoneInfo("Europe/Moscow")
NOON = datetime(2026, 12, 1, 12, 0, tzinfo=MOSCOW)
PIPELINES = {
    "test_batch_sent": ("Привлечение", "Тестовая партия отправлена"),
    "test_batch_received": ("Тестовая партия", "Тестовая партия получена"),
    "test_batch_approved": ("Тестовая партия", "Тестовая прошла проверку"),
    "main_batch_agreed": ("Тестовая партия", "Основная партия согласована"),
    "main_batch_sent": ("Тестовая партия", "Основная партия отправлена"),
    "repeat_sale": ("Тестовая партия", "Повторная продажа"),
}


@pytest.fixture
async def amocrm() -> AsyncIterator[AmoSandbox]:
    server = AmoSandbox(rate_limit=None)
    server.account.add_field("leads", "Трек-номер", "text")
    server.account.add_field("leads", "Дата доставки", "text")
    await server.start()
    yield server
    await server.close()


class Deal:
    """A buyer's deal in the sandbox amoCRM, moved by a manager; the service hears of it by webhook."""

    def __init__(self, app: App, amocrm: AmoSandbox, crm_id: int) -> None:
        self.app, self.amocrm, self.id = app, amocrm, crm_id
        self.url = f"http://127.0.0.1:{app.http_port}/webhooks/amocrm/{SECRET}"

    def status(self, stage: str) -> tuple[int, int]:
        pipeline, status = PIPELINES[stage]
        status_id = self.amocrm.account.status_id(pipeline, status)
        return status_id, self.amocrm.account.statuses[status_id]["pipeline_id"]

    async def move(self, stage: str) -> None:
        status_id, pipeline_id = self.status(stage)
        assert await self.amocrm.move_lead(self.id, status_id, pipeline_id) == [200]

    async def replay(self, stage: str) -> None:
        """amoCRM delivers a webhook of ``stage`` again (late or twice)."""
        status_id, pipeline_id = self.status(stage)
        form = {"leads[status][0][id]": str(self.id), "leads[status][0][status_id]": str(status_id),
                "leads[status][0][pipeline_id]": str(pipeline_id)}
        async with httpx.AsyncClient() as http:
            assert (await http.post(self.url, data=form)).status_code == 200

    def set_fields(self, **values: str) -> None:
        fields = {f["name"]: f["id"] for f in self.amocrm.account.fields["leads"].values()}
        self.amocrm.account.update_leads([{"id": self.id, "custom_fields_values": [
            {"field_id": fields[name], "values": [{"value": value}]} for name, value in values.items()]}])


async def new_deal(app: App, amocrm: AmoSandbox, buyer: Buyer, **lead: Any) -> tuple[Lead, Deal]:
    status_id = amocrm.account.status_id("Привлечение", "Каталог отправлен")
    responsible = {"responsible_user_id": lead["responsible_user_id"]} if lead.get("responsible_user_id") else {}
    crm_id = amocrm.account.add_leads([{"name": f"Сделка {buyer.first_name}", "status_id": status_id, **responsible}])[0]["id"]
    amocrm.webhook_urls = [f"http://127.0.0.1:{app.http_port}/webhooks/amocrm/{SECRET}"]
    row = await known_lead(app, buyer, crm_lead_id=crm_id, stage="catalog_sent", **lead)
    return row, Deal(app, amocrm, crm_id)


async def followups(app: App, lead_id: int) -> list[FollowUp]:
    async with app.db() as session:
        return list((await session.scalars(select(FollowUp).where(FollowUp.lead_id == lead_id).order_by(FollowUp.id))).all())


async def settled(app: App, lead_id: int) -> bool:
    """Nothing of the lead's is due now (sent, skipped, or held for later)."""
    now = app.followups.clock()
    return all(row.state in ("done", "skipped", "cancelled", "failed") or (row.state == "pending" and row.due_at > now) for row in await followups(app, lead_id))


def bot_texts(sandbox: TelegramSandbox, chat_id: int) -> list[str]:
    return [m.get("text", "") for m in sandbox.messages(chat_id, from_bot=True)]


def started(sandbox: TelegramSandbox, user_id: int, first_name: str, last_name: str | None = None) -> Buyer:
    """A buyer who has written to the bot before (the bot may write to them)."""
    return Buyer(sandbox, user_id=user_id, first_name=first_name, last_name=last_name, started=True)


@pytest.fixture
def buyer(sandbox: TelegramSandbox) -> Buyer:
    return started(sandbox, 1001, "Анна", "Петрова")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOON)


@pytest.fixture
def extra_settings() -> dict[str, Any]:
    """Settings a test module adds (overridden there)."""
    return {}


@pytest.fixture
async def app(sandbox: TelegramSandbox, amocrm: AmoSandbox, database_url: str, tmp_path: Path, renderer: CatalogRenderer,
              clock: FakeClock, extra_settings: dict[str, Any]) -> AsyncIterator[App]:
    settings = relay_settings(sandbox, database_url, tmp_path, AMOCRM_BASE_URL=amocrm.base_url,
                              AMOCRM_ACCESS_TOKEN=amocrm.long_lived_token, AMOCRM_RPS=50, **extra_settings)
    async with running(settings, renderer) as service:
        service.followups.clock = clock
        yield service
