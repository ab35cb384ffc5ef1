"""Alembic migrations, run programmatically (``optobot db upgrade`` and at service start)."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

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
    async with schema_connection(engine) as connection:
        if connection.dialect.name == "postgresql":  # instances starting together migrate one after the other
            await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), revision))


@asynccontextmanager
async def schema_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for schema changes, committed at the end.

    On SQLite foreign keys are off meanwhile: a batch migration rebuilds a table (copy, drop, rename), and dropping
    ``leads`` with them on would cascade-delete every child row. The references are checked before the commit.
    """
    async with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:  # outside a transaction, where SQLite honours it
            await connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        try:
            yield connection
            if sqlite and (broken := (await connection.exec_driver_sql("PRAGMA foreign_key_check")).fetchall()):
                raise ConfigError(f"optobot: the migration left {len(broken)} row(s) pointing nowhere "
                                  f"(first: table {broken[0][0]}); nothing was changed")
            await connection.commit()
        finally:
            if sqlite:
                await connection.rollback()
                await connection.exec_driver_sql("PRAGMA foreign_keys=ON")


async def current(engine: AsyncEngine) -> set[str]:
    """The revisions the database is at."""
    from alembic.runtime.migration import MigrationContext

    async with engine.connect() as connection:
        return await connection.run_sync(lambda sync: set(MigrationContext.configure(sync).get_current_heads()))


def heads() -> set[str]:
    """The revisions the code's migrations end in (what a current database is at)."""
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory.from_config(alembic_config()).get_heads())
