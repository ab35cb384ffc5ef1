"""What the analytics count is recorded where it happens: how far a lead got (and when it first reached the key
stage), the deal's budget, deals without a task, whether a question came within working hours, the leads of
before the analytics (the migration), and local days across a DST change."""
from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy import JSON, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.analytics import queries
from bot.analytics.period import Period
from bot.db import migrate
from bot.db.base import UTCDateTime
from bot.db.models import Lead
from bot.db.session import open_database
from bot.journal import CRM_STAGE_CHANGED, LEAD_MERGED, QUESTION_ASKED, STAGE_CHANGED, Journal
from bot.journey.identity import merge
from bot.relay.config import OperatorsFile, Roster
from bot.hours import WorkingHours
from bot.relay.models import RelayWait
from bot.relay.sla import Sla
from tests import conftest
from tests.crm_support import QUIZ, Env, FakeClock, amocrm, db, env  # noqa: F401  (fixtures)

MOSCOW = ZoneInfo("Europe/Moscow")


async def lead_with(db: async_sessionmaker[AsyncSession], **fields: object) -> Lead:
    async with db.begin() as session:
        lead = Lead(**{"language": "ru", **fields})
        session.add(lead)
    return lead


async def test_the_journal_keeps_the_furthest_stage_and_the_first_time_at_the_key_stage(db: async_sessionmaker[AsyncSession]) -> None:
    journal = Journal()
    lead = await lead_with(db, stage="catalog_sent")
    moves = [(CRM_STAGE_CHANGED, "test_batch_received"), (STAGE_CHANGED, "qualified"), (CRM_STAGE_CHANGED, "lost"),
             (CRM_STAGE_CHANGED, "test_batch_sent")]
    first_key_at = None
    for kind, stage in moves:
        async with db.begin() as session:
            fresh = await session.get(Lead, lead.id)
            record = await journal.event(session, fresh, kind, stage=stage, previous=fresh.stage)
            fresh.stage = stage
            first_key_at = first_key_at or record.created_at
    async with db() as session:
        fresh = await session.get(Lead, lead.id)
    assert (fresh.stage, fresh.furthest_stage, fresh.key_stage_at) == ("test_batch_sent", "test_batch_received", first_key_at)

    other = await lead_with(db, stage="won", furthest_stage="won", key_stage_at=first_key_at - timedelta(days=3))
    async with db.begin() as session:  # a website quiz lead that got further, folded into this one
        await merge(session, journal, await session.get(Lead, lead.id), await session.get(Lead, other.id))
    async with db() as session:
        merged = await session.get(Lead, lead.id)
        kinds = (await session.execute(sa.text("SELECT kind FROM lead_events ORDER BY id"))).scalars().all()
    assert (merged.furthest_stage, merged.key_stage_at) == ("won", first_key_at - timedelta(days=3)) and kinds[-1] == LEAD_MERGED


async def test_reconcile_reads_the_deal_budget_and_the_check_marks_deals_without_a_task(env: Env) -> None:
    lead = await env.new_lead(tg_user_id=31, first_name="Анна")
    await env.drain()
    deal = (await env.lead(lead.id)).crm_lead_id
    env.sandbox.account.update_leads([{"id": deal, "price": 240_000}])  # a manager set the budget; the webhook got lost
    await env.crm.checks.reconcile()
    assert (await env.lead(lead.id)).deal_price == 240_000

    assert await env.crm.checks.ensure_tasks() == 1  # the deal has no task: one is queued, and the gap is recorded
    marked = (await env.lead(lead.id)).no_task_since
    assert marked == env.clock.now
    env.clock.advance(60)
    await env.crm.checks.ensure_tasks()
    assert (await env.lead(lead.id)).no_task_since == marked  # since the first check that saw it
    await env.drain()  # the task reaches amoCRM
    await env.crm.checks.ensure_tasks()
    assert (await env.lead(lead.id)).no_task_since is None


async def test_a_wait_records_whether_the_question_came_within_working_hours(db: async_sessionmaker[AsyncSession]) -> None:
    journal, clock = Journal(), FakeClock(datetime(2026, 11, 27, 18, 59, tzinfo=MOSCOW).astimezone(UTC))  # Friday
    hours = WorkingHours.parse("09:00-19:00", "1-5", "Europe/Moscow")
    sla = Sla(db, journal, hours, minutes=5, escalate_minutes=15, roster=Roster(OperatorsFile(), Path("operators.yaml")), lang="ru", clock=clock)
    journal.subscribe(sla.on_record)
    for moment in (clock.now, clock.now + timedelta(minutes=2), clock.now + timedelta(days=3)):  # 18:59, 19:01, Monday 18:59
        clock.now = moment
        lead = await lead_with(db)
        async with db.begin() as session:
            await journal.event(session, await session.get(Lead, lead.id), QUESTION_ASKED, text="?")
    async with db() as session:
        waits = (await session.execute(select(RelayWait.in_hours).order_by(RelayWait.id))).scalars().all()
    assert waits == [True, False, True]


async def test_local_days_follow_the_time_zone_across_a_dst_change(db: async_sessionmaker[AsyncSession]) -> None:
    berlin = ZoneInfo("Europe/Berlin")  # 25.10.2026 03:00 CEST becomes 02:00 CET
    for moment in ("2026-10-24T21:30", "2026-10-24T22:30", "2026-10-25T22:30", "2026-10-25T23:30"):  # UTC
        await lead_with(db, arrival="cold", created_at=datetime.fromisoformat(moment).replace(tzinfo=UTC))
    period = Period(date(2026, 10, 24), date(2026, 10, 26), berlin)
    scope = queries.Scope(period, queries.Filters(), QUIZ, db.kw["bind"].dialect.name)
    async with db() as session:
        days = await queries.arrivals_by_day(session, scope)
    # 23:30 CEST on the 24th; 00:30 CEST, then 23:30 CET on the 25th; 00:30 CET on the 26th
    assert {(date(1970, 1, 1) + timedelta(days=index)).isoformat(): n for (index, _), n in days.items()} == {
        "2026-10-24": 1, "2026-10-25": 2, "2026-10-26": 1}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database with no tables at all (SQLite file, or a new PostgreSQL database)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'old.sqlite3'}"
        return
    name = f"optobot_m_{uuid.uuid4().hex[:10]}"
    await conftest._admin(f'CREATE DATABASE "{name}"')
    yield conftest._pg_url(name)
    await conftest._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_the_migration_fills_in_the_leads_of_before(empty_database: str) -> None:
    engine = open_database(empty_database).engine
    for revision in ("0100", "0200", "0300"):  # the database as it was before the analytics
        await migrate.upgrade(engine, revision)
    json, moment = JSON().with_variant(postgresql.JSONB(), "postgresql"), UTCDateTime()
    leads = sa.table("leads", sa.column("id"), sa.column("source"), sa.column("stage"), sa.column("language"), sa.column("is_blocked"),
                     sa.column("is_banned"), *(sa.column(name, json) for name in ("interests", "utm", "tags", "flow")),
                     *(sa.column(name, moment) for name in ("created_at", "updated_at")))
    events = sa.table("lead_events", sa.column("lead_id"), sa.column("kind"), sa.column("data", json), sa.column("created_at", moment))
    submissions = sa.table("quiz_submissions", sa.column("source"), sa.column("idempotency_key"), sa.column("raw_body"),
                           sa.column("content_type"), sa.column("lead_id"), sa.column("answers", json), sa.column("unknown", json),
                           sa.column("created_at", moment))
    now = datetime(2026, 11, 1, 10, tzinfo=UTC)
    common = {"language": "ru", "interests": {}, "utm": {}, "tags": [], "flow": {}, "is_blocked": False, "is_banned": False,
              "created_at": now, "updated_at": now}
    async with engine.begin() as connection:
        await connection.execute(leads.insert(), [{"id": 1, "source": "yandex", "stage": "lost", **common},
                                                  {"id": 2, "source": "vk", "stage": "catalog_sent", **common},
                                                  {"id": 3, "source": None, "stage": "qualified", **common}])
        await connection.execute(submissions.insert(), [{"source": "marquiz", "idempotency_key": "k1", "raw_body": "{}", "content_type": "json",
                                                         "answers": {}, "unknown": [], "lead_id": 1, "created_at": now}])
        await connection.execute(events.insert(), [
            {"lead_id": 1, "kind": CRM_STAGE_CHANGED, "data": {"stage": stage}, "created_at": now + timedelta(days=day)}
            for day, stage in ((1, "test_batch_sent"), (2, "main_batch_agreed"), (3, "lost"))])
    await migrate.upgrade(engine)
    result = sa.table("leads", sa.column("id"), sa.column("arrival"), sa.column("furthest_stage"), sa.column("key_stage_at", moment))
    async with engine.connect() as connection:
        rows = (await connection.execute(sa.select(result).order_by(result.c.id))).all()
    await engine.dispose()
    assert [tuple(row) for row in rows] == [(1, "quiz", "main_batch_agreed", now + timedelta(days=1)),
                                            (2, "ad", "catalog_sent", None), (3, "cold", "qualified", None)]
