"""Fixtures and helpers of the amoCRM sync tests: the sandbox amoCRM over HTTP (``amocrm``), the sync on the
conftest's ``database_url`` (SQLite, and PostgreSQL when configured), an injectable clock."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import DEFAULT_QUIZ, PACKAGE_DIR, Settings
from bot.crm.config import CrmConfig, load_crm_config
from bot.crm.models import OutboxItem
from bot.crm.service import CrmSync
from bot.db import migrate
from bot.db.models import Lead
from bot.db.session import Database, open_database
from bot.journal import LEAD_CREATED, Journal
from bot.quiz import Quiz, load_quiz
from bot.sandbox.amocrm import AmoSandbox

QUIZ: Quiz = load_quiz(DEFAULT_QUIZ)


class FakeClock:
    """An injectable UTC clock that only moves when told."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def fast_config(**outbox: Any) -> CrmConfig:
    """The default configuration with back-offs short enough for tests."""
    config = load_crm_config(PACKAGE_DIR / "crm" / "crm.yaml")
    return config.model_copy(update={
        "client": config.client.model_copy(update={"attempts": 3, "wait": 0.001, "wait_max": 0.005, "timeout": 5}),
        "outbox": config.outbox.model_copy(update={"backoff": 1, "backoff_max": 8, **outbox}),
    })


def crm_settings(sandbox: AmoSandbox, database_url: str, **extra: Any) -> Settings:
    values = {"AMOCRM_BASE_URL": sandbox.base_url, "AMOCRM_ACCESS_TOKEN": sandbox.long_lived_token,
              "AMOCRM_RPS": 50, "DATABASE_URL": database_url, "WORKING_HOURS": "00:00-24:00", "WORKING_DAYS": "1-7", **extra}
    return Settings(_env_file=None, **{k: v for k, v in values.items() if v is not None})


@dataclass
class Env:
    """One bot instance's CRM side: database, journal, sync, clock; and the amoCRM sandbox."""

    db: async_sessionmaker[AsyncSession]
    journal: Journal
    crm: CrmSync
    clock: FakeClock
    sandbox: AmoSandbox

    async def drain(self) -> int:
        return await self.crm.worker.drain()

    async def new_lead(self, **fields: Any) -> Lead:
        async with self.db.begin() as session:
            lead = Lead(**{"language": "ru", **fields})
            session.add(lead)
            await session.flush()
            await self.journal.event(session, lead, LEAD_CREATED, via="telegram")
        return lead

    async def event(self, lead_id: int, kind: str, **data: Any) -> None:
        async with self.db.begin() as session:
            lead = await session.get(Lead, lead_id)
            await self.journal.event(session, lead, kind, **data)

    async def say(self, lead_id: int, text: str, author: str = "buyer") -> None:
        async with self.db.begin() as session:
            lead = await session.get(Lead, lead_id)
            await self.journal.message(session, lead, direction="in" if author == "buyer" else "out", author=author,
                                       author_name="Анна" if author == "buyer" else None, text=text)

    async def lead(self, lead_id: int) -> Lead:
        async with self.db() as session:
            return await session.get(Lead, lead_id)

    async def items(self, **where: Any) -> list[OutboxItem]:
        async with self.db() as session:
            query = select(OutboxItem).filter_by(**where).order_by(OutboxItem.id)
            return list((await session.scalars(query)).all())

    def notes(self, crm_lead_id: int) -> list[str]:
        return [n["params"]["text"] for n in self.sandbox.account.find_notes(entity_ids=[crm_lead_id])]


async def open_db(url: str) -> Database:
    """The database at ``url``, migrated."""
    db = open_database(url)
    await migrate.upgrade(db.engine)
    return db


async def make_env(db: async_sessionmaker[AsyncSession], url: str, sandbox: AmoSandbox, *, config: CrmConfig | None = None,
                   clock: FakeClock | None = None, **settings: Any) -> Env:
    journal = Journal()
    clock = clock or FakeClock()
    crm = CrmSync(crm_settings(sandbox, url, **settings), db, journal, QUIZ, config=config or fast_config(), clock=clock)
    journal.subscribe(crm.writer)
    await crm.start()
    return Env(db, journal, crm, clock, sandbox)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    sessions = await open_db(database_url)
    yield sessions
    await sessions.close()


@pytest.fixture
async def amocrm() -> AsyncIterator[AmoSandbox]:
    server = AmoSandbox(rate_limit=None)
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def env(db: async_sessionmaker[AsyncSession], database_url: str, amocrm: AmoSandbox) -> AsyncIterator[Env]:
    instance = await make_env(db, database_url, amocrm)
    yield instance
    await instance.crm.close()


async def eventually(condition: Callable[[], Awaitable[bool] | bool], timeout: float = 5.0) -> None:
    """Wait until ``condition`` holds, checking often, failing after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = condition()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def drain_main() -> None:
    """Entry point of a worker process (``python -c``) configured by environment variables: one round."""
    settings = Settings(_env_file=None)
    sessions = await open_db(settings.database_url)
    crm = CrmSync(settings, sessions, Journal(), QUIZ, config=fast_config())
    await crm.start()
    await crm.worker.run_once()
    await crm.close()
    await sessions.close()
