"""Reminders from amoCRM tasks: a task of the REMINDER_TASK_TYPE type on the buyer's deal reminds the buyer at its
deadline with its text (escaped), learnt from amoCRM's task webhooks or, when one is lost, the reconcile; moved with
its deadline, cancelled when completed or deleted; it fires once, across a restart."""
from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bot.catalog.render import CatalogRenderer
from bot.config import Settings
from bot.crm.webhooks import parse_tasks
from bot.journal import TASK_COMPLETED, TASK_DELETED, TASK_OPEN
from bot.sandbox.amocrm import AmoSandbox
from bot.sandbox.telegram import TelegramSandbox
from tests.buyer import Buyer
from tests.conftest import SECRET
from tests.followups_support import NOON, bot_texts, buyer, followups, new_deal, settled  # noqa: F401  (fixtures)
from tests.relay_support import OPERATORS, FakeClock, eventually, relay_settings, running

DAY = timedelta(days=1)


@pytest.fixture
async def amocrm() -> AsyncIterator[AmoSandbox]:
    server = AmoSandbox(rate_limit=None)
    server.account.add_task_type("Напомнить клиенту")
    await server.start()
    yield server
    await server.close()


def reminder_type(amocrm: AmoSandbox) -> int:
    return next(t["id"] for t in amocrm.account.task_types.values() if t["name"] == "Напомнить клиенту")


@pytest.fixture
def settings(sandbox: TelegramSandbox, database_url: str, tmp_path: Path, amocrm: AmoSandbox) -> Settings:
    return relay_settings(sandbox, database_url, tmp_path, AMOCRM_BASE_URL=amocrm.base_url, AMOCRM_ACCESS_TOKEN=amocrm.long_lived_token,
                          AMOCRM_RPS=50, REMINDER_TASK_TYPE=reminder_type(amocrm))


def at(moment: datetime) -> int:
    return int(moment.timestamp())


async def test_an_amocrm_task_reminds_the_buyer_once_across_a_restart(settings: Settings, renderer: CatalogRenderer, amocrm: AmoSandbox,
                                                                      sandbox: TelegramSandbox, buyer: Buyer) -> None:
    kind, clock = reminder_type(amocrm), FakeClock(NOON)
    async with running(settings, renderer) as app:
        app.followups.clock = clock
        lead, deal = await new_deal(app, amocrm, buyer)
        passport, statuses = await amocrm.add_task(deal.id, "Прислать <паспорт> для доставки", at(NOON + DAY), task_type_id=kind)
        assert statuses == [200]
        await amocrm.add_task(deal.id, "Позвонить покупателю", at(NOON + DAY))  # a manager's own task: not a reminder
        done, _ = await amocrm.add_task(deal.id, "Уже не нужно", at(NOON + DAY), task_type_id=kind)
        gone, _ = await amocrm.add_task(deal.id, "Удалённая", at(NOON + DAY), task_type_id=kind)
        await amocrm.edit_task(passport, complete_till=at(NOON + 2 * DAY))  # the manager moves the deadline
        await amocrm.edit_task(passport, complete_till=at(NOON + 2 * DAY))  # … and the webhook comes twice
        await amocrm.edit_task(done, is_completed=True, result={"text": "Договорились по телефону"})
        await amocrm.delete_task(gone)
        lost = amocrm.account.add_tasks([{"entity_type": "leads", "entity_id": deal.id, "text": "Оплатить счёт №5", "task_type_id": kind,
                                          "complete_till": at(NOON + 2 * DAY)}])[0]["id"]  # its webhook is lost
        await app.crm.checks.reconcile()
        rows = await followups(app, lead.id)
        assert [(r.key, r.state, r.due_at, r.data["text"]) for r in rows] == [
            (f"crmtask:{passport}", "pending", NOON + 2 * DAY, "Прислать <паспорт> для доставки"),
            (f"crmtask:{done}", "cancelled", NOON + DAY, "Уже не нужно"),
            (f"crmtask:{gone}", "cancelled", NOON + DAY, "Удалённая"),
            (f"crmtask:{lost}", "pending", NOON + 2 * DAY, "Оплатить счёт №5"),
        ]
        assert [r.reason for r in rows[1:3]] == ["the amoCRM task is completed", "the amoCRM task is deleted"]
        assert await app.followups.tick() is False and bot_texts(sandbox, buyer.id) == []  # not yet

    clock.set(NOON + 2 * DAY + timedelta(seconds=5))
    async with running(settings, renderer) as app:  # the service restarted; the reminders are in the database
        app.followups.clock = clock
        amocrm.webhook_urls = [f"http://127.0.0.1:{app.http_port}/webhooks/amocrm/{SECRET}"]
        app.followups.wake.set()
        reminders = await buyer.replies(2)
        assert sorted(m["text"] for m in reminders) == ["🔔 Напоминание: Оплатить счёт №5", "🔔 Напоминание: Прислать <паспорт> для доставки"]
        await eventually(lambda: settled(app, lead.id))
        await amocrm.edit_task(passport, text="Прислать паспорт (изменено)")  # after it went: nothing more
        await app.crm.checks.reconcile()
        assert await app.followups.tick() is False
        await eventually(lambda: any(t.startswith("🤖 Бот → покупателю (напоминание менеджера):") for t in bot_texts(sandbox, OPERATORS)))
        rows = await followups(app, lead.id)
    assert [r.state for r in rows] == ["done", "cancelled", "cancelled", "done"]
    assert len(bot_texts(sandbox, buyer.id)) == 2


def test_the_task_webhook_is_read_as_amocrm_sends_it() -> None:
    form = {"task": {
        "add": [{"id": "11", "element_id": "5000", "element_type": "2", "text": "Оплатить", "status": "0", "complete_till": "1764580000",
                 "task_type": "3001", "responsible_user_id": "9"},
                {"id": "12", "element_id": "77", "element_type": "1", "text": "У контакта", "status": "0"}],  # a contact's: not ours
        "update": [{"id": "13", "element_id": "5000", "element_type": "2", "text": "Готово", "status": "1", "task_type": "3001"}],
        "delete": [{"id": "14", "element_id": "5000", "element_type": "2"}],
    }}
    assert [(c.crm_task_id, c.crm_lead_id, c.task_type_id, c.text, c.complete_till, c.state) for c in parse_tasks(form)] == [
        (11, 5000, 3001, "Оплатить", 1764580000, TASK_OPEN), (13, 5000, 3001, "Готово", None, TASK_COMPLETED),
        (14, 5000, None, "", None, TASK_DELETED)]


async def test_a_task_whose_deadline_passed_over_an_hour_ago_reminds_no_one(settings: Settings, renderer: CatalogRenderer,
                                                                             amocrm: AmoSandbox, sandbox: TelegramSandbox, buyer: Buyer) -> None:
    """A reminder task the bot learns of 2 hours after its deadline sends nothing; one 30 minutes past goes at once."""
    kind = reminder_type(amocrm)
    async with running(settings, renderer) as app:
        app.followups.clock = FakeClock(NOON)
        lead, deal = await new_deal(app, amocrm, buyer)
        await amocrm.add_task(deal.id, "Оплатить счёт №3", at(NOON - timedelta(hours=2)), task_type_id=kind)
        recent, _ = await amocrm.add_task(deal.id, "Прислать документы", at(NOON - timedelta(minutes=30)), task_type_id=kind)
        assert (await buyer.reply())["text"] == "🔔 Напоминание: Прислать документы"
        await app.crm.checks.reconcile()  # the re-read finds the late task too
        await eventually(lambda: settled(app, lead.id))
        assert await app.followups.tick() is False
        rows = await followups(app, lead.id)
    assert [(r.key, r.state) for r in rows] == [(f"crmtask:{recent}", "done")]
    assert bot_texts(sandbox, buyer.id) == ["🔔 Напоминание: Прислать документы"]
