"""Configuration and operations: discovery problems, sync off, merges, ``optobot crm status|retry``."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bot.config import PACKAGE_DIR, Settings
from bot.crm import cli, store
from bot.crm.config import load_crm_config
from bot.crm.models import FAILED, LEAD, NOTE, PENDING
from bot.crm.service import CrmSync
from bot.journal import Journal
from bot.journey.identity import merge
from bot.sandbox.amocrm.account import LOST
from tests.crm_support import QUIZ, Env, amocrm, crm_settings, db, env, fast_config, make_env  # noqa: F401  (fixtures)


async def test_missing_names_are_reported_with_what_exists_and_the_work_waits(db, database_url, amocrm, capsys) -> None:  # noqa: F811
    config = fast_config()
    config = config.model_copy(update={"stages": {**config.stages, "new": ("Воронка", "Новая заявка")}})
    amocrm.account.field_by_name("leads", "Канал продаж")["name"] = "Канал"
    env = await make_env(db, database_url, amocrm, config=config)
    problems = env.crm.state.problems
    assert "pipeline «Воронка» (stage new) not found; amoCRM has «Привлечение», «Тестовая партия»" in problems
    assert any(p.startswith("lead field «Канал продаж» (channel) not found; amoCRM has «Категория», «Объём закупки», «Канал»") for p in problems)

    lead = await env.new_lead(tg_user_id=31, first_name="Анна")  # the bot keeps working: the item waits
    await env.say(lead.id, "привет")
    assert await env.crm.worker.run_once() == 0
    assert {item.state for item in await env.items()} == {PENDING} and not amocrm.account.leads
    assert await cli.status(crm_settings(amocrm, database_url), argparse.Namespace()) == 1
    assert "! pipeline «Воронка» (stage new) not found" in capsys.readouterr().out

    amocrm.account.add_pipeline("Воронка", ["Новая заявка"])
    amocrm.account.field_by_name("leads", "Канал")["name"] = "Канал продаж"
    env.clock.advance(61)
    await env.drain()
    await env.drain()
    assert len(amocrm.account.leads) == 1 and len(env.notes((await env.lead(lead.id)).crm_lead_id)) == 1
    await env.crm.close()


async def test_without_amocrm_the_operations_are_queued_and_nothing_runs(db, database_url) -> None:  # noqa: F811
    journal = Journal()
    crm = CrmSync(Settings(_env_file=None, DATABASE_URL=database_url), db, journal, QUIZ, config=fast_config())
    journal.subscribe(crm.writer)
    await crm.start()
    assert not crm.enabled and crm.routes == [] and crm.workers == []
    env = Env(db, journal, crm, None, None)  # type: ignore[arg-type]
    lead = await env.new_lead(tg_user_id=32)
    await env.say(lead.id, "привет")
    assert [(item.op, item.state) for item in await env.items()] == [(LEAD, PENDING), (NOTE, PENDING)]
    await crm.close()


def test_the_configuration_names_its_problems(tmp_path: Path) -> None:
    text = (PACKAGE_DIR / "crm" / "crm.yaml").read_text(encoding="utf-8")
    bad = tmp_path / "crm.yaml"
    bad.write_text(text.replace("catalog_sent: {stage: catalog_sent,", "catalog_sent: {stage: shipped,"), encoding="utf-8")
    with pytest.raises(ValueError, match="events.catalog_sent.stage: 'shipped' is not in stages"):
        load_crm_config(bad)


async def test_a_merge_moves_the_queue_folds_the_later_deal_in_and_leaves_notes(env: Env) -> None:
    survivor = await env.new_lead(tg_user_id=33, first_name="Анна")
    other = await env.new_lead(first_name="Анна", phone="+79995550011")
    await env.drain()
    await env.say(other.id, "с сайта")  # queued for the website lead…
    async with env.db.begin() as session:
        kept, gone = await session.get(type(survivor), survivor.id), await session.get(type(other), other.id)
        from_crm = gone.crm_lead_id
        await merge(session, env.journal, kept, gone)
    await env.drain()
    lead = await env.lead(survivor.id)
    notes = env.notes(lead.crm_lead_id)
    assert notes[0].split("\n")[1] == "с сайта"  # …and it went to the survivor's lead
    assert notes[1].startswith(f"Тот же покупатель — объединено с этой сделкой:\n• сделка №{from_crm} ")
    assert notes[2].startswith(f"К этой заявке присоединена заявка бота №{other.id}")
    assert env.sandbox.account.leads[from_crm]["status_id"] == LOST  # the later deal was the duplicate
    assert lead.crm_contact_id == env.sandbox.account.leads[from_crm]["contacts"][0]  # the buyer's one contact moved over


async def test_status_lists_the_queue_and_retry_requeues_failed_items(env: Env, database_url: str, capsys) -> None:
    lead = await env.new_lead(tg_user_id=34, first_name="Анна")
    await env.drain()
    del env.sandbox.account.leads[(await env.lead(lead.id)).crm_lead_id]
    await env.say(lead.id, "в никуда")
    await env.drain()
    settings = crm_settings(env.sandbox, database_url)

    assert await cli.status(settings, argparse.Namespace()) == 1
    out = capsys.readouterr().out
    assert "failed: 1" in out and "NotFound at entity_id: Entity not found" in out

    async with env.db.begin() as session:
        await store.write(session, store.STATE, {"state": "blocked", "reason": "403", "retry_at": "2999-01-01T00:00:00+00:00"})
    assert await cli.retry(settings, argparse.Namespace(ids=[])) == 0
    assert "re-queued 1 failed item(s)" in capsys.readouterr().out
    [item] = await env.items(op=NOTE)
    assert item.state == PENDING and item.attempts == 0
    async with env.db() as session:
        assert (await store.read(session, store.STATE))["state"] == "ok"
    assert not await env.items(state=FAILED)
