"""The sync survives outages, 429 storms, lost answers, a killed worker, dead tokens and a blocked account."""
from __future__ import annotations

import argparse
import asyncio
import os
import sys

from bot.crm import cli, store
from bot.crm.client import AmoAuthError
from bot.crm.models import DONE, PENDING, RETRY, SENDING
from bot.db.base import utcnow
from tests.crm_support import Env, amocrm, crm_settings, db, env, make_env, open_db  # noqa: F401  (fixtures)


def bodies(notes: list[str]) -> list[str]:
    return [note.split("\n")[1] for note in notes]


async def conversation(env: Env, lead_id: int, count: int, start: int = 0) -> list[str]:
    texts = [f"сообщение {i}" for i in range(start, start + count)]
    for text in texts:
        await env.say(lead_id, text)
    return texts


async def test_an_outage_loses_and_duplicates_nothing(env: Env) -> None:
    lead = await env.new_lead(tg_user_id=1, first_name="Анна")
    texts = await conversation(env, lead.id, 5)
    env.sandbox.outage = True
    for _ in range(4):  # 20 s of outage, a round every 5 s
        await env.crm.worker.run_once()
        env.clock.advance(5)
    assert [item.state for item in await env.items(op="lead")] == [RETRY]
    assert {item.state for item in await env.items(op="note")} == {PENDING}  # waiting for the card
    texts += await conversation(env, lead.id, 5, start=5)

    env.sandbox.outage = False
    env.clock.advance(10)
    await env.drain()
    env.clock.advance(10)  # the notes waited for the card to exist
    await env.drain()

    crm_id = (await env.lead(lead.id)).crm_lead_id
    assert len(env.sandbox.account.leads) == 1
    assert bodies(env.notes(crm_id)) == texts
    assert {item.state for item in await env.items()} == {DONE}


async def test_an_answer_lost_after_amocrm_carried_the_request_out_is_looked_up_not_repeated(env: Env) -> None:
    lead = await env.new_lead(tg_user_id=2, first_name="Анна", phone="+79990002233")
    env.sandbox.inject(502, path="/api/v4/leads/complex", after=True)
    await env.drain()
    [card] = await env.items(op="lead")
    assert card.state == RETRY and card.uncertain

    texts = await conversation(env, lead.id, 4)
    env.clock.advance(2)
    await env.drain()  # finds the lead by its marker, then sends the notes
    env.sandbox.inject(504, path="/api/v4/leads/notes", after=True)
    texts += await conversation(env, lead.id, 3, start=4)
    await env.drain()
    env.clock.advance(2)
    await env.drain()

    assert len(env.sandbox.account.leads) == 1 and len(env.sandbox.account.contacts) == 1
    assert bodies(env.notes((await env.lead(lead.id)).crm_lead_id)) == texts
    reconciled = [item for item in await env.items(op="note") if item.result.get("reconciled")]
    assert len(reconciled) == 3


async def test_a_stream_of_429_loses_and_duplicates_nothing(env: Env) -> None:
    lead = await env.new_lead(tg_user_id=3, first_name="Анна")
    await env.drain()
    texts = await conversation(env, lead.id, 12)
    env.sandbox.inject(429, times=7)
    for _ in range(5):
        await env.drain()
        env.clock.advance(10)

    assert env.sandbox.count(429) == 7
    assert bodies(env.notes((await env.lead(lead.id)).crm_lead_id)) == texts
    assert {item.state for item in await env.items()} == {DONE}


async def test_a_worker_killed_between_sent_and_marked_done_does_not_duplicate(env: Env, database_url: str) -> None:
    lead = await env.new_lead(tg_user_id=4, first_name="Анна")
    await env.drain()
    texts = await conversation(env, lead.id, 5)
    held = env.sandbox.hold("POST", "/api/v4/leads/notes")
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import asyncio; from tests.crm_support import drain_main; asyncio.run(drain_main())",
        env={**os.environ, "DATABASE_URL": database_url, "AMOCRM_BASE_URL": env.sandbox.base_url,
             "AMOCRM_ACCESS_TOKEN": env.sandbox.long_lived_token, "LOG_LEVEL": "WARNING"},
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        await asyncio.wait_for(held.reached.wait(), 20)
    except TimeoutError:
        worker.kill()
        raise AssertionError((await worker.communicate())[1].decode()[-2000:]) from None
    crm_id = (await env.lead(lead.id)).crm_lead_id
    assert bodies(env.notes(crm_id)) == texts  # amoCRM has them…
    worker.kill()  # …and the worker dies before it could say so
    await worker.wait()
    held.release.set()
    assert {item.state for item in await env.items(op="note")} == {SENDING}

    env.clock.now = utcnow()
    await env.drain()
    assert {item.state for item in await env.items(op="note")} == {SENDING}  # another worker may still be sending
    env.clock.advance(env.crm.config.outbox.lease + 1)
    await env.drain()

    assert bodies(env.notes(crm_id)) == texts
    assert {item.state for item in await env.items()} == {DONE}
    assert all(item.result.get("reconciled") for item in await env.items(op="note"))
    more = await conversation(env, lead.id, 2, start=5)
    await env.drain()
    assert bodies(env.notes(crm_id)) == texts + more


async def test_an_expired_token_is_refreshed_once_never_in_parallel(amocrm, database_url: str, db) -> None:  # noqa: F811
    oauth = {"AMOCRM_ACCESS_TOKEN": None, "AMOCRM_CLIENT_ID": amocrm.client_id,
             "AMOCRM_CLIENT_SECRET": amocrm.client_secret, "AMOCRM_REDIRECT_URI": amocrm.redirect_uri}
    assert await cli.login(crm_settings(amocrm, database_url, **oauth), argparse.Namespace(code=amocrm.issue_code())) == 0
    async with db() as session:
        assert (await store.read(session, store.TOKENS))["refresh_token"]
    first = await make_env(db, database_url, amocrm, **oauth)
    other_db = await open_db(database_url)  # a second instance: its own engine, lock and token cache
    second = await make_env(other_db, database_url, amocrm, **oauth)
    try:
        amocrm.expire_access_tokens()
        calls = [env.crm.client.get("/api/v4/account") for env in (first, second) for _ in range(8)]
        answers = await asyncio.gather(*calls)
        assert all(answer["subdomain"] == "optobot" for answer in answers)
        assert amocrm.refreshes == 1  # a second refresh would have presented a used refresh token: revoked
        assert amocrm.count(401) >= 2
        amocrm.expire_access_tokens()
        await second.crm.client.get("/api/v4/account")
        await first.crm.client.get("/api/v4/account")
        assert amocrm.refreshes == 2
    finally:
        await second.crm.close()
        await first.crm.close()
        await other_db.close()


async def test_a_rejected_long_lived_token_stops_the_sync_and_keeps_the_queue(env: Env) -> None:
    lead = await env.new_lead(tg_user_id=5, first_name="Анна")
    env.sandbox._access.pop(env.sandbox.long_lived_token)
    try:
        await env.crm.client.get("/api/v4/account")
        raise AssertionError("expected AmoAuthError")
    except AmoAuthError:
        pass
    await env.crm.worker.run_once()
    async with env.db() as session:
        assert (await store.read(session, store.STATE))["state"] == "unauthorized"
    assert [item.state for item in await env.items()] == [PENDING]
    assert (await env.lead(lead.id)).crm_lead_id is None


async def test_a_blocked_account_stops_the_sync_loudly_and_resumes_later(env: Env, database_url: str, capsys) -> None:
    lead = await env.new_lead(tg_user_id=6, first_name="Анна")
    texts = await conversation(env, lead.id, 3)
    env.sandbox.blocked = True
    await env.crm.worker.run_once()
    seen = env.sandbox.count()
    await env.crm.worker.run_once()
    assert env.sandbox.count() == seen  # stopped: no more requests while blocked
    assert {item.state for item in await env.items()} == {PENDING}

    assert await cli.status(crm_settings(env.sandbox, database_url), argparse.Namespace()) == 1
    assert "amoCRM sync: blocked" in capsys.readouterr().out

    env.sandbox.blocked = False
    env.clock.advance(env.crm.config.client.blocked_probe + 1)
    await env.drain()
    await env.drain()
    assert bodies(env.notes((await env.lead(lead.id)).crm_lead_id)) == texts
    async with env.db() as session:
        assert (await store.read(session, store.STATE))["state"] == "ok"


async def test_two_workers_drain_the_outbox_once_and_in_order(env: Env, database_url: str) -> None:
    """Two instances' workers (each its own engine) drain one outbox at once: every note once, each lead's in order."""
    other_db = await open_db(database_url)
    other = await make_env(other_db, database_url, env.sandbox, clock=env.clock)
    try:
        leads = [await env.new_lead(tg_user_id=100 + index, first_name=f"Покупатель {index}") for index in range(8)]
        await env.drain()
        said = {lead.id: await conversation(env, lead.id, 6) for lead in leads}

        await asyncio.gather(env.drain(), other.drain(), env.drain(), other.drain())
        await asyncio.gather(env.drain(), other.drain())

        for lead in leads:
            assert bodies(env.notes((await env.lead(lead.id)).crm_lead_id)) == said[lead.id]
        assert {item.state for item in await env.items()} == {DONE}
    finally:
        await other.crm.close()
        await other_db.close()
