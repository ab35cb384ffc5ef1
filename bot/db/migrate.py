"""Alembic migrations, run programmatically (``optobot db upgrade`` and at service start)."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.config import ConfigError, first_line

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK = 0x0B07_0001  # the PostgreSQL advisory lock held while migrating


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


async def upgrade(engine: AsyncEngine, revision: str = "heads") -> None:
    """Bring the database schema up to date; a database that can't be reached is a :class:`ConfigError` naming DATABASE_URL."""
    try:
        async with engine.connect():
            pass
    except (OSError, SQLAlchemyError) as exc:
        raise ConfigError(f"optobot: DATABASE_URL: cannot connect ({first_line(exc)}); check the address, the credentials "
                          "and that the server runs") from None
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":  # instances starting together migrate one after the other
            await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), revision))


async def current(engine: AsyncEngine) -> set[str]:
    """The revisions the database is at."""
    from alembic.runtime.migration import MigrationContext

    async with engine.connect() as connection:
        return await connection.run_sync(lambda sync: set(MigrationContext.configure(sync).get_current_heads()))


def heads() -> set[str]:
    """The revisions the code's migrations end in (what a current database is at)."""
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory.from_config(alembic_config()).get_heads())
