"""The catalogue's table: every import (command, admin upload, scheduled refresh) with its outcome and report."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from bot.db.base import Base, utcnow


class CatalogImport(Base):
    """One import. A scheduled refresh claims its ``slot`` (one row per period: the instance that inserts it refreshes);
    the feed's ``etag``/``last_modified`` make the next refresh conditional; an upload waits as ``pending`` for «Применить»."""

    __tablename__ = "catalog_imports"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    slot: Mapped[str | None] = mapped_column(String(64), unique=True)
    origin: Mapped[str] = mapped_column(String(16))  # command | upload | refresh
    source: Mapped[str] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(16), default="running")  # running | applied | refused | pending | cancelled | unchanged | dry-run | interrupted
    version: Mapped[str | None] = mapped_column(String(64))
    etag: Mapped[str | None] = mapped_column(String(256))
    last_modified: Mapped[str | None] = mapped_column(String(64))
    report: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    lease_until: Mapped[datetime | None]  # while running: past it, its process died
