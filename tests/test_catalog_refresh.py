"""The catalogue's imports as the service runs them: the scheduled refresh (one per period across instances, nothing done
when the feed's ETag is unchanged, a broken feed reported to the admins and the catalogue kept) and an admin's upload
with «Применить» / «Отменить» over the sandbox Bot API."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from bot.catalog.importer import read_mapping, run_import
from bot.catalog.imports import LEASE, Imports
from bot.catalog.models import CatalogImport
from bot.catalog.render import CatalogRenderer
from bot.catalog.store import Store
from bot.db.session import Database, open_database
from bot.sandbox.telegram import TelegramSandbox
from tests.buyer import buttons
from tests.conftest import make_settings, running
from tests.crm_support import eventually
from tests.test_catalog_import import FEED, feed, folder  # noqa: F401  (fixtures)

ADMIN = 4242


class Feed:
    """A feed served over HTTP with an ETag; answers 304 to a request that names the current one."""

    def __init__(self) -> None:
        self.body, self.etag, self.asked = FEED.encode(), '"f1"', []
        self.gate: threading.Event | None = None  # while set here (and not yet open), requests wait for it

    def serve(self) -> tuple[ThreadingHTTPServer, str]:
        feed = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                feed.asked.append(self.headers.get("If-None-Match"))
                if feed.gate is not None:
                    feed.gate.wait(30)
                if self.headers.get("If-None-Match") == feed.etag:
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/xml")
                self.send_header("ETag", feed.etag)
                self.send_header("Content-Length", str(len(feed.body)))
                self.end_headers()
                self.wfile.write(feed.body)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_address[1]}/feed.xml"


@pytest.fixture
def served() -> Iterator[tuple[Feed, str]]:
    feed_ = Feed()
    server, url = feed_.serve()
    yield feed_, url
    server.shutdown()
    server.server_close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = open_database(database_url)
    yield database
    await database.close()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 30, 10, 5, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


async def test_scheduled_refresh_once_per_period_and_nothing_when_unchanged(
        folder: Path, tmp_path: Path, served: tuple[Feed, str], db: Database, sandbox: TelegramSandbox, database_url: str) -> None:  # noqa: F811
    feed_, url = served
    settings = make_settings(sandbox, database_url, tmp_path / "data", CATALOG_DIR=folder, CATALOG_SOURCE=url, CATALOG_REFRESH="1h")
    clock, notices = Clock(), []

    async def notify(text: str) -> None:
        notices.append(text)

    store = Store(folder, tmp_path / "data")
    one, two = (Imports(settings, db, Store(folder, tmp_path / "data"), notify, clock) for _ in range(2))
    assert len(one.workers) == 1
    await asyncio.gather(one.refresh_once(), two.refresh_once())  # two instances, one period: one refresh
    assert feed_.asked == [None]
    first = store.current().version
    assert first and {p.sku for p in store.current().products} == {"T-101", "W-1", "W-2"}

    clock.now += timedelta(hours=1)
    await two.refresh_once()
    assert feed_.asked == [None, '"f1"'] and store.current().version == first  # 304: nothing imported
    async with db() as session:
        rows = (await session.execute(select(CatalogImport).order_by(CatalogImport.id))).scalars().all()
    assert [(r.origin, r.status, r.etag) for r in rows] == [("refresh", "applied", '"f1"'), ("refresh", "unchanged", '"f1"')]
    assert rows[0].version == first and "T-101" not in rows[1].report

    clock.now += timedelta(hours=1)
    feed_.body, feed_.etag = b"<yml_catalog><shop><offers>", '"f2"'  # broken: reported, the catalogue kept
    await one.refresh_once()
    assert store.current().version == first and len(notices) == 1 and "not well-formed XML" in notices[0]

    clock.now += timedelta(hours=1)
    feed_.body, feed_.etag = FEED.replace("<price>2500</price>", "<price>2700</price>").encode(), '"f3"'
    await one.refresh_once()
    assert feed_.asked[-1] == '"f1"'  # the last good import's ETag, not the broken one's
    assert store.current().version != first and len(notices) == 1
    kettle = next(p for p in store.current().products if p.sku == "W-1")
    assert kettle.prices["small"] == 2700


async def test_a_refresh_whose_process_died_is_done_again_in_its_period(
        folder: Path, tmp_path: Path, served: tuple[Feed, str], db: Database, sandbox: TelegramSandbox, database_url: str) -> None:  # noqa: F811
    feed_, url = served
    settings = make_settings(sandbox, database_url, tmp_path / "data", CATALOG_DIR=folder, CATALOG_SOURCE=url, CATALOG_REFRESH="1h")
    clock = Clock()

    async def notify(text: str) -> None:
        raise AssertionError(text)

    store = Store(folder, tmp_path / "data")
    dead, alive = (Imports(settings, db, Store(folder, tmp_path / "data"), notify, clock) for _ in range(2))
    feed_.gate = threading.Event()
    dying = asyncio.create_task(dead.refresh_once())
    await eventually(lambda: feed_.asked == [None])  # its row says running; the feed has not answered yet
    dying.cancel()  # the instance dies there: its row stays running, its lease is no longer renewed
    feed_.gate.set()
    feed_.gate = None
    assert await alive.refresh_once() is False and feed_.asked == [None]  # within its lease: the period's refresh is its

    clock.now += LEASE + timedelta(seconds=1)  # the same period, the lease run out
    await alive.refresh_once()
    assert feed_.asked == [None, None] and {p.sku for p in store.current().products} == {"T-101", "W-1", "W-2"}
    async with db() as session:
        rows = (await session.execute(select(CatalogImport))).scalars().all()
    assert [(r.origin, r.status, r.etag) for r in rows] == [("refresh", "applied", '"f1"')]  # the period's one row, done


async def test_admin_upload_is_applied_on_the_button(folder: Path, feed: Path, tmp_path: Path, sandbox: TelegramSandbox,  # noqa: F811
                                                     database_url: str, renderer: CatalogRenderer) -> None:
    store = Store(folder, tmp_path / "data")
    async with httpx.AsyncClient() as client:  # the supplier's first import, from the command line
        await run_import(store, "feed.xml", feed.read_bytes(), mapping=read_mapping(folder, None), base=tmp_path, client=client)
    settings = make_settings(sandbox, database_url, tmp_path / "data", CATALOG_DIR=folder, ADMIN_IDS=str(ADMIN))
    sandbox.add_user(ADMIN, "Ольга", started=True)
    sandbox.add_user(ADMIN + 1, "Не админ", started=True)
    changed = FEED.replace("<vendorCode>W-1</vendorCode>", "<vendorCode>W-7</vendorCode>").replace("<price>1200</price>", "<price>1250</price>")
    async with running(settings, renderer) as app:
        sandbox.send_media(ADMIN + 1, "document", content=changed.encode(), file_name="feed.xml", mime_type="application/xml")
        sandbox.send_media(ADMIN, "document", content=changed.encode(), file_name="feed.xml", mime_type="application/xml")
        [report] = await sandbox.wait_for_messages(ADMIN, 1, timeout=60)
        assert "Файл feed.xml проверен" in report["text"] and "добавлены: W-7" in report["text"] and "убраны: W-1" in report["text"]
        assert "новые цены: T-101" in report["text"] and "a file path in a feed fetched by URL" in report["text"]
        assert "W-1" in {p.sku for p in app.catalog.catalogue().products}  # not before the button
        labels = dict(buttons(report))
        sandbox.click(ADMIN, report, labels["Применить"])
        done = (await sandbox.wait_for_messages(ADMIN, 2, timeout=30))[1]
        assert done["text"].startswith("Готово: каталог переключён на версию")
        assert {p.sku for p in app.catalog.catalogue().products} == {"T-101", "W-7", "W-2"}
        assert buttons(sandbox.messages(ADMIN, from_bot=True)[0]) == []  # the buttons are gone once pressed
        assert await app.imports.apply(1) is None and not await app.imports.cancel(1)  # and a second press changes nothing
    assert "проверен" not in " ".join(m.get("text", "") for m in sandbox.messages(ADMIN + 1, from_bot=True))  # not an admin
