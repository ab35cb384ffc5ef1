"""Imports as the service and the command run them, each recorded in ``catalog_imports`` (this module owns its queries):
``optobot catalog import``, an admin's upload waiting for «Применить», and the scheduled refresh of ``CATALOG_SOURCE`` (``CATALOG_REFRESH``): one refresh per period
across instances (the instance that inserts the period's row does it), conditional on the feed's ETag/Last-Modified.
An import running renews its lease; one whose lease ran out (its process died) is marked ``interrupted`` by the next
import to begin, and the refresh of its period is done again."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import structlog
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.catalog.importer import APPLIED, PENDING, REFUSED, Fetched, Report, fetch_source, read_mapping, run_import
from bot.catalog.model import CatalogError
from bot.catalog.models import CatalogImport
from bot.catalog.store import Store
from bot.config import Settings, refresh_seconds
from bot.db.base import utcnow
from bot.db.sql import insert_ignore
from bot.loops import Loop, Worker

log = structlog.get_logger(__name__)

RUNNING, UNCHANGED, CANCELLED, INTERRUPTED = "running", "unchanged", "cancelled", "interrupted"
LEASE = timedelta(seconds=60)  # renewed every third of it while the import runs
#: Tell the admins about a refresh that was not applied (report text).
Notify = Callable[[str], Awaitable[None]]


async def read_source(client: httpx.AsyncClient, source: str, etag: str | None = None,
                      last_modified: str | None = None) -> tuple[Fetched, Path | None]:
    """A feed by URL (conditionally when validators are known) or a file, and where its relative picture paths start."""
    if source.lower().startswith(("http://", "https://")):
        return await fetch_source(client, source, etag, last_modified), None
    path = Path(source)
    if not path.is_file():
        raise CatalogError(f"{source}: no such file")
    return Fetched(path.read_bytes(), None, None), path.resolve().parent


class Imports:
    def __init__(self, settings: Settings, db: async_sessionmaker[AsyncSession], store: Store, notify: Notify,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.settings = settings
        self.db = db
        self.store = store
        self.notify = notify
        self.clock = clock
        self.period = refresh_seconds(settings.catalog_refresh)
        self._lock = asyncio.Lock()  # one import at a time in this process
        self.workers: list[Worker] = [Loop("catalog.refresh", self.refresh_once, every=min(60.0, self.period)).run] if self.period else []

    async def _begin(self, origin: str, source: str, slot: str | None = None) -> int | None:
        """A row for a new import (``None``: the ``slot`` is taken, another instance does it); first, the imports whose
        process died are marked interrupted, and the ``slot`` of one is taken again."""
        now = self.clock()
        values = {"slot": slot, "origin": origin, "source": source[:512], "status": RUNNING, "report": "", "created_at": now,
                  "lease_until": now + LEASE}
        async with self.db.begin() as session:
            await session.execute(update(CatalogImport).where(
                CatalogImport.status == RUNNING, or_(CatalogImport.lease_until.is_(None), CatalogImport.lease_until < now))
                .values(status=INTERRUPTED, finished_at=now, report="its process stopped before it ended"))
            if slot is None:
                row = CatalogImport(**values)
                session.add(row)
                await session.flush()
                return row.id
            inserted = await session.execute(insert_ignore(session, CatalogImport).values(**values))
            if inserted.rowcount != 1:
                retaken = await session.execute(update(CatalogImport).where(
                    CatalogImport.slot == slot, CatalogImport.status == INTERRUPTED).values(**values, finished_at=None))
                if retaken.rowcount != 1:
                    return None
            return int((await session.execute(select(CatalogImport.id).where(CatalogImport.slot == slot))).scalar_one())

    @contextlib.asynccontextmanager
    async def _leased(self, import_id: int) -> AsyncIterator[None]:
        """Renew the import's lease while the block runs (a failed renewal is logged and tried again)."""
        async def renew() -> None:
            async with self.db.begin() as session:
                await session.execute(update(CatalogImport).where(CatalogImport.id == import_id, CatalogImport.status == RUNNING)
                                      .values(lease_until=self.clock() + LEASE))

        every = LEASE.total_seconds() / 3
        stop = asyncio.Event()
        renewing = asyncio.create_task(Loop("catalog.import_lease", renew, every=every, first_after=every).run(stop))
        try:
            yield
        finally:
            stop.set()
            await renewing

    async def _finish(self, import_id: int, status: str, report: Report | None, lang: str, **values: Any) -> None:
        async with self.db.begin() as session:
            await session.execute(update(CatalogImport).where(CatalogImport.id == import_id).values(
                status=status, version=report.version if report else None, report=report.text(lang) if report else "",
                finished_at=self.clock(), **values))

    async def command(self, source: str, mapping_file: Path | None, *, dry_run: bool, force: bool) -> Report:
        """``optobot catalog import``; a mapping or a source that cannot be read raises :class:`CatalogError`, unrecorded."""
        mapping = read_mapping(self.settings.catalog_dir, mapping_file)
        async with httpx.AsyncClient() as client:
            fetched, base = await read_source(client, source)
        import_id = await self._begin("command", source)
        assert import_id is not None
        async with self._leased(import_id):
            report = await self._import(source, fetched.data or b"", base=base, mapping=mapping, dry_run=dry_run, force=force)
        await self._finish(import_id, report.status, report, self.settings.default_language,
                           etag=fetched.etag, last_modified=fetched.last_modified)
        return report

    async def upload(self, name: str, data: bytes) -> tuple[int, Report]:
        """An admin's file: checked and saved, waiting for :meth:`apply` (or :meth:`cancel`)."""
        import_id = await self._begin("upload", name)
        assert import_id is not None
        async with self._leased(import_id):
            report = await self._import(name, data, base=None, pending=True)
        await self._finish(import_id, report.status, report, self.settings.default_language)
        return import_id, report

    async def apply(self, import_id: int) -> str | None:
        """Switch to an uploaded version still pending; its version, or ``None`` if it was applied or cancelled already."""
        async with self.db.begin() as session:
            version = (await session.execute(select(CatalogImport.version).where(
                CatalogImport.id == import_id, CatalogImport.status == PENDING))).scalar_one_or_none()
            taken = await session.execute(update(CatalogImport).where(CatalogImport.id == import_id, CatalogImport.status == PENDING)
                                          .values(status=APPLIED, finished_at=self.clock()))
            if taken.rowcount != 1 or version is None:
                return None
            self.store.activate(version)  # inside the transaction: the row says applied only once the switch is made
        log.info("catalog.applied", import_id=import_id, version=version)
        return version

    async def cancel(self, import_id: int) -> bool:
        async with self.db.begin() as session:
            taken = await session.execute(update(CatalogImport).where(CatalogImport.id == import_id, CatalogImport.status == PENDING)
                                          .values(status=CANCELLED, finished_at=self.clock()))
            return taken.rowcount == 1

    async def _import(self, name: str, data: bytes, *, base: Path | None, mapping: dict[str, Any] | None = None,
                      pending: bool = False, dry_run: bool = False, force: bool = False) -> Report:
        """:func:`run_import` with ``mapping``, by default ``CATALOG_DIR/import.yaml``; one import at a time."""
        async with self._lock, httpx.AsyncClient() as client:
            try:
                mapping = mapping if mapping is not None else read_mapping(self.settings.catalog_dir, None)
            except CatalogError as error:
                return Report(source=name, reason=str(error))
            return await run_import(self.store, name, data, mapping=mapping, base=base, client=client, pending=pending,
                                    dry_run=dry_run, force=force)

    async def refresh_once(self) -> bool:
        """Refresh ``CATALOG_SOURCE`` if this period's refresh is not claimed yet; False (the loop waits) either way."""
        source = self.settings.catalog_source or ""
        slot = f"refresh:{int(self.clock().timestamp()) // self.period}"
        import_id = await self._begin("refresh", source, slot)
        if import_id is None:
            return False
        async with self._leased(import_id):
            await self._refresh(import_id, source)
        return False

    async def _refresh(self, import_id: int, source: str) -> None:
        lang = self.settings.default_language
        async with self.db() as session:
            last = (await session.execute(select(CatalogImport.etag, CatalogImport.last_modified).where(
                CatalogImport.source == source[:512], CatalogImport.id != import_id,
                CatalogImport.status.in_((APPLIED, UNCHANGED))).order_by(CatalogImport.id.desc()).limit(1))).first()
        etag, modified = (last.etag, last.last_modified) if last else (None, None)
        try:
            async with httpx.AsyncClient() as client:
                fetched, base = await read_source(client, source, etag, modified)
        except (CatalogError, OSError) as error:
            report = Report(source=source, reason=str(error))
            await self._finish(import_id, REFUSED, report, lang)
            await self.notify(report.text(lang))
            return
        if fetched.data is None:
            await self._finish(import_id, UNCHANGED, None, lang, etag=etag, last_modified=modified)
            log.info("catalog.refresh_unchanged", source=source)
            return
        report = await self._import(source, fetched.data, base=base)
        await self._finish(import_id, report.status, report, lang, etag=fetched.etag, last_modified=fetched.last_modified)
        log.info("catalog.refreshed", source=source, status=report.status, version=report.version)
        if report.status != APPLIED:
            await self.notify(report.text(lang))
