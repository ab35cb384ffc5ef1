"""The SQLite file as every connection of the service opens it."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from bot.db.session import open_database


async def test_a_commit_is_on_disk_before_it_returns(tmp_path: Path) -> None:
    """WAL with ``synchronous=FULL`` (2): what was acknowledged to Telegram survives a power cut, not only a kill."""
    db = open_database(f"sqlite+aiosqlite:///{tmp_path / 'optobot.sqlite3'}")
    try:
        async with db.engine.connect() as connection:
            mode = (await connection.execute(text("PRAGMA journal_mode"))).scalar_one()
            synchronous = (await connection.execute(text("PRAGMA synchronous"))).scalar_one()
    finally:
        await db.close()
    assert (mode, synchronous) == ("wal", 2)
