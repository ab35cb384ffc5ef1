"""The sandbox keeps amoCRM's rules, and the client reads its answers the way amoCRM means them."""
from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from bot.crm.client import AmoBlocked, AmoClient, AmoRejected, AmoUnavailable
from bot.crm.tokens import StaticToken
from bot.ratelimit import Window
from bot.sandbox.amocrm import AmoSandbox, start_sandbox_amocrm
from tests.crm_support import amocrm, fast_config  # noqa: F401  (fixtures)


@pytest.fixture
async def client(amocrm: AmoSandbox) -> AsyncIterator[AmoClient]:  # noqa: F811
    amo = AmoClient(amocrm.base_url, StaticToken(amocrm.long_lived_token), Window(100), fast_config().client)
    yield amo
    await amo.close()


async def test_batch_calls_take_arrays_and_name_the_bad_item(client: AmoClient, amocrm: AmoSandbox) -> None:  # noqa: F811
    with pytest.raises(AmoRejected, match="array"):
        await client.post("/api/v4/leads", {"name": "not in an array"})
    category = amocrm.account.field_by_name("leads", "Категория")
    good = {"name": "ok", "request_id": "a"}
    unknown_field = {"name": "x", "request_id": "b", "custom_fields_values": [{"field_id": 1, "values": [{"value": "?"}]}]}
    unknown_enum = {"name": "y", "request_id": "c", "custom_fields_values": [{"field_id": category["id"], "values": [{"enum_id": 1}]}]}
    with pytest.raises(AmoRejected) as refused:
        await client.post("/api/v4/leads", [good, unknown_field, unknown_enum])
    assert refused.value.errors == {
        "b": "NotSupportedChoice at custom_fields_values.0.field_id: The value you selected is not a valid choice.",
        "c": "NotSupportedChoice at custom_fields_values.0.values.0.enum_id: The value you selected is not a valid choice.",
    }
    assert amocrm.account.leads == {}  # all or nothing
    with pytest.raises(AmoRejected, match="Too many"):
        await client.post("/api/v4/leads/complex", [{"name": str(i)} for i in range(51)])


async def test_a_status_must_belong_to_its_pipeline(client: AmoClient, amocrm: AmoSandbox) -> None:  # noqa: F811
    account = amocrm.account
    first, second = list(account.pipelines)
    status = account.status_id("Тестовая партия", "Повторная продажа")
    with pytest.raises(AmoRejected) as refused:
        await client.post("/api/v4/leads", [{"status_id": status, "pipeline_id": first}])
    assert "status_id" in refused.value.errors["0"]
    with pytest.raises(AmoRejected):
        await client.post("/api/v4/leads", [{"status_id": 142}])  # closed statuses need their pipeline
    [created] = (await client.post("/api/v4/leads", [{"status_id": status, "pipeline_id": second}]))["_embedded"]["leads"]
    assert account.leads[created["id"]]["pipeline_id"] == second


async def test_empty_searches_are_204_and_the_client_says_none(client: AmoClient, amocrm: AmoSandbox) -> None:  # noqa: F811
    assert await client.get("/api/v4/contacts", {"query": "79990000000"}) is None
    assert amocrm.count(204) == 1
    assert await client.get("/api/v4/leads/1") is None


async def test_over_the_limit_is_a_429_html_page_and_persistent_abuse_blocks_the_account() -> None:
    sandbox, base_url, token = await start_sandbox_amocrm(rate_limit=2)
    sandbox.block_after = 3
    try:
        async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {token}"}) as http:
            answers = [await http.get("/api/v4/account") for _ in range(4)]
            assert [a.status_code for a in answers] == [200, 200, 429, 429]
            assert answers[2].headers["Content-Type"].startswith("text/html") and "Retry-After" not in answers[2].headers
            await http.get("/api/v4/account")
            assert (await http.get("/api/v4/account")).status_code == 403  # blocked now
            assert (await http.get("/api/v4/account", headers={"Authorization": "Bearer nope"})).status_code == 403
        assert sandbox.peak_rate() == 7
    finally:
        await sandbox.close()


async def test_the_client_backs_off_on_429_and_5xx_but_never_repeats_an_uncertain_post(client: AmoClient, amocrm: AmoSandbox) -> None:  # noqa: F811
    amocrm.inject(429, times=2)
    assert (await client.get("/api/v4/account"))["subdomain"] == "optobot"
    amocrm.inject(503, times=2)
    assert (await client.get("/api/v4/account"))["subdomain"] == "optobot"
    amocrm.inject(429)
    assert await client.post("/api/v4/leads", [{"name": "after a 429"}])  # a 429 was not carried out: repeated
    amocrm.inject(502, after=True)
    with pytest.raises(AmoUnavailable) as unknown:
        await client.post("/api/v4/leads", [{"name": "maybe"}])
    assert unknown.value.uncertain
    assert [lead["name"] for lead in amocrm.account.leads.values()] == ["after a 429", "maybe"]
    amocrm.inject(429, times=5)
    with pytest.raises(AmoUnavailable) as busy:
        await client.get("/api/v4/account")
    assert not busy.value.uncertain
    amocrm.blocked = True
    with pytest.raises(AmoBlocked):
        await client.get("/api/v4/account")


async def test_the_demo_can_show_a_lead_as_amocrm_holds_it(amocrm: AmoSandbox) -> None:  # noqa: F811
    account = amocrm.account
    [contact] = account.add_contacts([{"name": "Анна", "custom_fields_values": [{"field_code": "PHONE", "values": [{"value": "+79990001122"}]}]}])
    [lead] = account.add_leads([{"name": "Анна, Telegram-бот #L1", "_embedded": {"contacts": [{"id": contact["id"]}]},
                                 "custom_fields_values": [{"field_id": account.field_by_name("leads", "Город")["id"], "values": [{"value": "Казань"}]}]}])
    account.add_notes([{"entity_id": lead["id"], "note_type": "common", "params": {"text": "Покупатель (Анна):\nпривет"}}])
    account.add_tasks([{"entity_id": lead["id"], "entity_type": "leads", "text": "Перезвонить", "complete_till": 1_900_000_000}])
    card = amocrm.describe_lead(lead["id"])
    for line in ("Воронка: Привлечение → Новая заявка", "Город: Казань", "Телефон: +79990001122", "Перезвонить", "привет"):
        assert line in card


async def test_the_sandbox_runs_as_its_own_process_and_tells_what_it_saw() -> None:
    """``python -m bot.sandbox.amocrm`` prints where it serves; ``/sandbox/requests`` and ``/sandbox/notes`` answer from outside,
    stamped with a monotonic clock this process shares, and are themselves neither rate-limited nor recorded."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.sandbox.amocrm", "--port", "0", "--rate-limit", "2", stdout=asyncio.subprocess.PIPE)
    try:
        started = json.loads(await asyncio.wait_for(process.stdout.readline(), 60))  # type: ignore[union-attr]
        auth = {"Authorization": f"Bearer {started['token']}"}
        async with httpx.AsyncClient(base_url=started["base_url"]) as http:
            before = time.monotonic()
            lead = (await http.post("/api/v4/leads", json=[{"name": "Опт"}], headers=auth)).json()["_embedded"]["leads"][0]
            note = {"entity_id": lead["id"], "note_type": "common", "params": {"text": "привет"}}
            added = await http.post("/api/v4/leads/notes", json=[note], headers=auth)
            assert "at" not in added.json()["_embedded"]["notes"][0]
            assert (await http.get("/api/v4/account", headers=auth)).status_code == 429  # the third within a second
            after = time.monotonic()
            for _ in range(3):
                notes = (await http.get("/sandbox/notes")).json()
            requests = (await http.get("/sandbox/requests")).json()
    finally:
        process.terminate()
        await process.wait()
    assert [(r["method"], r["path"], r["status"]) for r in requests] == [
        ("POST", "/api/v4/leads", 200), ("POST", "/api/v4/leads/notes", 200), ("GET", "/api/v4/account", 429)]
    assert all(before <= r["at"] <= after for r in requests)
    [note] = notes
    assert (note["entity_id"], note["text"]) == (lead["id"], "привет")
    assert requests[1]["at"] <= note["at"] <= after
