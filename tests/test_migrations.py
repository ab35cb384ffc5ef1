"""Migrations on a populated SQLite file: a batch migration that rebuilds ``leads`` (copy, drop, rename) keeps every
child row, because the upgrade runs with foreign keys off and checks the references before it commits."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Column, Connection, String, text

from bot.config import ConfigError
from bot.db import migrate
from bot.db.models import Lead, Message
from bot.db.session import open_database


def rebuild_leads(sync: Connection) -> None:
    """What a batch migration adding a column to ``leads`` does on SQLite."""
    with Operations(MigrationContext.configure(sync)).batch_alter_table("leads", recreate="always") as batch:
        batch.add_column(Column("note", String(16)))


async def populated(url: str) -> None:
    db = open_database(url)
    try:
        await migrate.upgrade(db.engine)
        async with db.begin() as session:
            lead = Lead()
            session.add(lead)
            await session.flush()
            session.add(Message(lead_id=lead.id, direction="in", author="buyer", text="Здравствуйте"))
    finally:
        await db.close()


async def count_messages(url: str, schema_change: Callable[[Connection], None], with_helper: bool) -> int:
    db = open_database(url)
    try:
        if with_helper:
            async with migrate.schema_connection(db.engine) as connection:
                await connection.run_sync(schema_change)
        else:  # an ordinary connection: foreign keys on, as the service's pragmas set them
            async with db.engine.begin() as connection:
                await connection.run_sync(schema_change)
        async with db.engine.connect() as connection:
            return (await connection.execute(text("SELECT count(*) FROM messages"))).scalar_one()
    finally:
        await db.close()


async def test_a_rebuilt_leads_table_keeps_its_messages(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.sqlite3'}"
    await populated(url)
    assert await count_messages(url, rebuild_leads, with_helper=True) == 1


async def test_without_it_sqlite_would_cascade_the_drop(tmp_path: Path) -> None:
    """The danger the helper prevents is real: the same rebuild on an ordinary connection deletes the messages."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.sqlite3'}"
    await populated(url)
    assert await count_messages(url, rebuild_leads, with_helper=False) == 0


async def test_a_migration_leaving_dangling_rows_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.sqlite3'}"
    await populated(url)
    with pytest.raises(ConfigError, match="pointing nowhere"):
        await count_messages(url, lambda sync: sync.execute(text("DELETE FROM leads")), with_helper=True)
    assert await count_messages(url, lambda sync: None, with_helper=True) == 1
