"""What managers do in amoCRM comes back: webhooks (through the guarded route) and the periodic reconcile."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web
from sqlalchemy import select

from bot.crm.webhooks import parse_changes, subdomain_of
from bot.db.models import LeadEvent
from bot.journal import CRM_STAGE_CHANGED
from bot.web import create_web_app
from tests.crm_support import Env, amocrm, db, env, make_env, open_db  # noqa: F401  (fixtures)

SECRET = "s3cret-webhook-path-0123456789"


@pytest.fixture
async def server(env: Env) -> AsyncIterator[str]:
    runner = web.AppRunner(create_web_app(SECRET, env.crm.routes))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def synced_lead(env: Env) -> tuple[int, int]:
    lead = await env.new_lead(tg_user_id=21, first_name="Анна")
    await env.drain()
    return lead.id, (await env.lead(lead.id)).crm_lead_id


async def stage_events(env: Env, lead_id: int) -> list[dict]:
    async with env.db() as session:
        query = select(LeadEvent.data).where(LeadEvent.lead_id == lead_id, LeadEvent.kind == CRM_STAGE_CHANGED).order_by(LeadEvent.id)
        return list((await session.scalars(query)).all())


async def test_a_manager_moving_the_lead_in_amocrm_moves_it_here(env: Env, server: str) -> None:
    lead_id, crm_id = await synced_lead(env)
    env.sandbox.webhook_urls = [f"{server}/webhooks/amocrm/{SECRET}"]
    account = env.sandbox.account

    assert await env.sandbox.move_lead(crm_id, account.status_id("Тестовая партия", "Тестовая партия получена")) == [200]
    lead = await env.lead(lead_id)
    assert lead.stage == "test_batch_received"
    assert lead.crm_status_id == account.leads[crm_id]["status_id"]
    assert lead.crm_pipeline_id == account.leads[crm_id]["pipeline_id"]

    pipeline = account.leads[crm_id]["pipeline_id"]
    assert await env.sandbox.move_lead(crm_id, 143, pipeline) == [200]
    assert (await env.lead(lead_id)).stage == "lost"
    assert [(e["previous"], e["stage"], e["source"]) for e in await stage_events(env, lead_id)] == [
        ("new", "test_batch_received", "webhook"), ("test_batch_received", "lost", "webhook"),
    ]

    manager = list(account.users)[1]
    assert await env.sandbox.set_responsible(crm_id, manager) == [200]
    assert (await env.lead(lead_id)).responsible_user_id == manager
    assert len(env.notes(crm_id)) == 0 and len(await env.items()) == 1  # nothing echoed back to amoCRM


async def test_the_webhook_route_is_guarded_and_validates_the_form(env: Env, server: str) -> None:
    lead_id, crm_id = await synced_lead(env)
    status = env.sandbox.account.status_id("Привлечение", "Каталог отправлен")
    form = {"leads[status][0][id]": str(crm_id), "leads[status][0][status_id]": str(status), "account[subdomain]": "optobot"}
    async with httpx.AsyncClient() as http:
        assert (await http.post(f"{server}/webhooks/amocrm/wrong-secret-0123456789", data=form)).status_code == 404
        assert (await env.lead(lead_id)).stage == "new"
        answer = await http.post(f"{server}/webhooks/amocrm/{SECRET}", data=form)
        assert answer.status_code == 200 and answer.json()["moved"] == 1
        assert (await http.post(f"{server}/webhooks/amocrm/{SECRET}", content=b"leads=1&leads[status]=2",
                                headers={"Content-Type": "application/x-www-form-urlencoded"})).status_code == 400
    assert (await env.lead(lead_id)).stage == "catalog_sent"


def test_webhook_parsing_and_subdomains() -> None:
    form = {"leads": {"status": [{"id": "5", "status_id": "7", "pipeline_id": "3", "old_status_id": "6"}],
                      "responsible": [{"id": "5", "responsible_user_id": "11"}], "delete": [{"id": "9"}]}}
    changes = parse_changes(form)
    assert [(c.crm_lead_id, c.status_id, c.pipeline_id, c.responsible_user_id) for c in changes] == [
        (5, 7, 3, None), (5, None, None, 11),
    ]
    assert subdomain_of("https://shop.amocrm.ru") == "shop" and subdomain_of("https://opt.kommo.com") == "opt"
    assert subdomain_of("http://127.0.0.1:8000") is None


async def test_a_lost_webhook_is_caught_up_by_the_reconcile(env: Env) -> None:
    lead_id, crm_id = await synced_lead(env)
    account = env.sandbox.account
    manager = list(account.users)[2]
    account.update_leads([{"id": crm_id, "status_id": account.status_id("Привлечение", "Тестовая партия отправлена"),
                           "responsible_user_id": manager}])  # no webhook reaches us

    assert await env.crm.checks.reconcile() == 1
    lead = await env.lead(lead_id)
    assert (lead.stage, lead.responsible_user_id) == ("test_batch_sent", manager)
    assert await env.crm.checks.reconcile() == 0  # nothing new since the cursor
    assert [e["source"] for e in await stage_events(env, lead_id)] == ["reconcile"]


async def test_two_instances_reconciling_at_once_move_the_lead_once(env: Env, database_url: str) -> None:
    """Every instance runs the reconcile on its own schedule: run together, they record the stage move once
    (one ``crm_stage_changed``, so one stage message), the first run and later ones."""
    other_db = await open_db(database_url)
    other = await make_env(other_db, database_url, env.sandbox, clock=env.clock)
    try:
        lead_id, crm_id = await synced_lead(env)
        account = env.sandbox.account
        for stage, name in (("test_batch_sent", "Тестовая партия отправлена"), ("qualified", "Квалификация пройдена")):
            account.update_leads([{"id": crm_id, "status_id": account.status_id("Привлечение", name)}])
            moved = await asyncio.gather(env.crm.checks.reconcile(), other.crm.checks.reconcile())
            assert sorted(moved) == [0, 1]
            assert (await env.lead(lead_id)).stage == stage
        assert [e["stage"] for e in await stage_events(env, lead_id)] == ["test_batch_sent", "qualified"]
    finally:
        await other.crm.close()
        await other_db.close()


@pytest.mark.parametrize("body, reason", [
    (b"leads=x", "leads must be"),
    (b"leads[status]=x", "leads[status] must be a list"),
    (b"leads[status][0]=x", "leads[status][0] must be an object"),
    (b"leads[status][0][id]=99999999999999999999", "leads[status][0][id] must be an amoCRM id"),
    (b"leads[status][0][id]=" + b"9" * 5000, "leads[status][0][id] must be an amoCRM id"),
    (b"leads[status][0][id]=5&leads[status][0][status_id]=-3", "status_id] must be an amoCRM id"),
    (b"leads" + b"[a]" * 600 + b"=1", "nested deeper"),
    (b"leads[status][0][id]=5&leads[status][0][id][x]=6", "conflicts"),
])
async def test_a_malformed_webhook_gets_400_with_the_reason(env: Env, server: str, body: bytes, reason: str) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.post(f"{server}/webhooks/amocrm/{SECRET}", content=body,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 400 and reason in answer.json()["error"], answer.text


async def test_a_json_webhook_gets_415(env: Env, server: str) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.post(f"{server}/webhooks/amocrm/{SECRET}", json={"leads": {"status": [{"id": 5}]}})
    assert answer.status_code == 415 and "application/x-www-form-urlencoded" in answer.json()["error"]
