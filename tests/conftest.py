"""Shared fixtures: a migrated database (SQLite file; PostgreSQL when configured), the sandbox
Telegram Bot API server, a shared catalogue renderer, and the whole app wired to them."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from bot.app import App
from bot.catalog.render import CatalogRenderer
from bot.config import DEFAULT_CATALOG_DIR as CATALOG_DIR
from bot.config import Settings, load_settings
from bot.db import migrate
from bot.db.models import TgUpdate
from bot.db.session import open_database
from bot.logs import setup_logging
from bot.sandbox.telegram import TelegramSandbox
from tests.buyer import Buyer
from tests.crm_support import eventually

TOKEN = "123456:TEST-sandbox-token"
SECRET = "test-webhook-secret-0123456789"
POSTGRES_URL = os.environ.get("OPTOBOT_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("OPTOBOT_TEST_REDIS_URL")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """PostgreSQL/Redis tests skip, saying why, unless their server is configured."""
    for item in items:
        if "postgres" in item.keywords and not POSTGRES_URL:
            item.add_marker(pytest.mark.skip(reason="set OPTOBOT_TEST_POSTGRES_URL (e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/test) to run PostgreSQL tests"))
        if "redis" in item.keywords and not REDIS_URL:
            item.add_marker(pytest.mark.skip(reason="set OPTOBOT_TEST_REDIS_URL (e.g. redis://127.0.0.1:6379/15) to run Redis tests"))


# ------------------------------------------------------------------ databases
async def _migrate(url: str) -> None:
    db = open_database(url)
    try:
        await migrate.upgrade(db.engine)
    finally:
        await db.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once per session; each test gets a copy."""
    path = tmp_path_factory.mktemp("db") / "template.sqlite3"
    asyncio.run(_migrate(f"sqlite+aiosqlite:///{path}"))
    return path


async def _admin(sql: str) -> None:
    db = open_database(POSTGRES_URL)
    try:
        async with db.engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text(sql))
    finally:
        await db.close()


def _pg_url(name: str) -> str:
    return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A migrated PostgreSQL template database, created once per session and dropped after."""
    name = f"optobot_tpl_{uuid.uuid4().hex[:10]}"

    async def build() -> None:
        await _admin(f'CREATE DATABASE "{name}"')
        await _migrate(_pg_url(name))

    asyncio.run(build())
    yield name
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "optobot.sqlite3"
    shutil.copy(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
async def postgres_url(postgres_template: str) -> AsyncIterator[str]:
    name = f"optobot_t_{uuid.uuid4().hex[:10]}"
    await _admin(f'CREATE DATABASE "{name}" TEMPLATE "{postgres_template}"')
    yield _pg_url(name)
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh migrated database: a SQLite file, and PostgreSQL too when configured."""
    return request.getfixturevalue(f"{request.param}_url")


def command_line(monkeypatch: pytest.MonkeyPatch, database_url: str, workdir: Path) -> None:
    """The environment of a CLI test: the database, quiet logs, no stray .env or remote services."""
    for name in ("BOT_TOKEN", "REDIS_URL", "AMOCRM_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    monkeypatch.chdir(workdir)


# ------------------------------------------------------------ Telegram & app
@pytest.fixture
async def sandbox() -> AsyncIterator[TelegramSandbox]:
    server = TelegramSandbox(token=TOKEN)
    await server.start(host="127.0.0.1", port=0)
    yield server
    await server.stop()


@pytest.fixture(scope="session")
def renderer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CatalogRenderer]:
    """One process pool for the whole session (workers are expensive to spawn)."""
    pool = CatalogRenderer(CATALOG_DIR, tmp_path_factory.mktemp("catalogs"), workers=2)
    yield pool
    pool.close()


def make_settings(sandbox: TelegramSandbox, database_url: str, data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": sandbox.base_url, "DATABASE_URL": database_url,
        "WEBHOOK_SECRET": SECRET, "HTTP_PORT": 0, "DATA_DIR": data_dir,
        "REPORT_SCHEDULE": "off",
        "CATALOG_PRERENDER": False,  # the session's renderer draws only what a test asks for  # the weekly digest only where a test asks for it (on Mondays it would go out at start)
        **overrides,
    }
    return load_settings(_env_file=None, **values)


@pytest.fixture
def settings(sandbox: TelegramSandbox, database_url: str, tmp_path: Path) -> Settings:
    return make_settings(sandbox, database_url, tmp_path)


def running(settings: Settings, renderer: CatalogRenderer) -> contextlib.AbstractAsyncContextManager[App]:
    """One instance of the whole service, polling the sandbox and serving HTTP on a free port."""
    return App(settings, renderer=renderer).running()


async def all_handled(app: App, sandbox: TelegramSandbox) -> None:
    """Wait until the service took every update the sandbox holds and handled each (its handler has run)."""
    async def handled() -> bool:
        if sandbox.pending_updates:
            return False
        async with app.db() as session:
            return (await session.scalars(select(TgUpdate.update_id).where(TgUpdate.handled_at.is_(None)).limit(1))).first() is None

    await eventually(handled, timeout=10)


@pytest.fixture
async def app(settings: Settings, renderer: CatalogRenderer) -> AsyncIterator[App]:
    async with running(settings, renderer) as service:
        yield service


@pytest.fixture
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail a test whose requests left a traceback (or an error) in the service's log above DEBUG: a 500 is logged with
    one, and so is a request taken whose handling then crashed in the background."""
    setup_logging("INFO")  # the service's log, as `optobot run` sets it up (structlog's events reach caplog)
    caplog.set_level(logging.INFO)
    yield
    bad = [r for r in (*caplog.get_records("setup"), *caplog.get_records("call"))
           if r.levelno > logging.DEBUG and (r.exc_info or "Traceback" in r.getMessage() or r.levelno >= logging.ERROR)]
    assert not bad, [f"{r.name}: {r.getMessage()[:300]}" for r in bad]


@pytest.fixture
def buyer(sandbox: TelegramSandbox) -> Buyer:
    return Buyer(sandbox, user_id=1001, first_name="Анна", last_name="Петрова", username="anna_opt")
