"""Importing what suppliers have (bot/catalog/importer.py): a YML feed, an XLSX and a cp1251 CSV price list, each with its
report; hostile XML refused; pictures from files and URLs; an import that fails or looks wrong leaves the catalogue."""
from __future__ import annotations

import io
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from openpyxl import Workbook
from PIL import Image

from bot.catalog.importer import APPLIED, DRY_RUN, PENDING, REFUSED, Report, read_mapping, run_import
from bot.catalog.model import load_catalogue
from bot.catalog.render import CatalogRequest, render_pdf
from bot.catalog.store import Store
from bot.config import DEFAULT_CATALOG_DIR as CATALOG_DIR
from tests.test_catalog import pdf_text
from tests.test_cli import optobot

FEED = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE yml_catalog SYSTEM "shops.dtd">
<yml_catalog date="2026-11-30 10:00">
 <shop>
  <name>Чайный дом</name>
  <currencies><currency id="RUR" rate="1"/></currencies>
  <categories>
   <category id="1">Чай</category>
   <category id="2" parentId="1">Зелёный чай</category>
   <category id="3">Посуда</category>
  </categories>
  <offers>
   <offer id="101" available="true">
    <name>Сенча</name><vendorCode>T-101</vendorCode><price>1200</price><oldprice>1500</oldprice>
    <currencyId>RUR</currencyId><categoryId>2</categoryId>
    <picture>pics/wide.png</picture><picture>pics/small.jpg</picture>
    <description>Японский зелёный чай</description>
    <param name="Страна">Япония</param><param name="Вес" unit="г">100</param>
    <param name="Цена опт">1000</param><param name="Мин. заказ">5</param>
   </offer>
   <offer id="102" available="false">
    <name>Чайник чугунный</name><vendorCode>W-1</vendorCode><price>2500</price><categoryId>3</categoryId>
    <picture>pics/small.jpg</picture>
   </offer>
   <offer id="103"><name>Сломанный</name><price>дорого</price><categoryId>3</categoryId></offer>
   <offer id="104"><name>Без категории</name><price>10</price><categoryId>99</categoryId></offer>
   <offer id="105"><name>Без картинки</name><vendorCode>W-2</vendorCode><price>300</price><categoryId>3</categoryId>
    <picture>pics/missing.png</picture></offer>
  </offers>
 </shop>
</yml_catalog>
"""
BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<yml_catalog><shop><categories><category id="1">&lol3;</category></categories></shop></yml_catalog>
"""
EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE yml_catalog [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<yml_catalog><shop><categories><category id="1">&secret;</category></categories></shop></yml_catalog>
"""
COLUMNS = """columns:
  sku: Артикул
  name: Наименование
  category: Категория
  prices: {small: "Цена до 100 тыс", big: "Цена от 100 тыс"}
  unit: Ед.
  min_order: Мин. заказ
  stock: Остаток
  variants: Фасовка
  flags: Метки
  params: [Срок годности]
"""
HEADER = ["Артикул", "Наименование", "Категория", "Цена до 100 тыс", "Цена от 100 тыс", "Ед.", "Мин. заказ", "Остаток",
          "Фасовка", "Метки", "Срок годности"]
ROWS = [["F-1", "Гречка ядрица", "Крупы", 95.5, 89, "кг", 25, 1200, "25 кг, 50 кг", "хит", "12 мес."],
        ["F-2", "Рис длиннозёрный", "Крупы", "112,40", "105", "кг", 25, 0, "", "", "18 мес."],
        ["F-3", "Масло подсолнечное", "Масло", "abc", 150, "упак", 12, 40, "", "новинка", "10 мес."],
        ["F-4", "Масло оливковое", "Масло", 890, 850, "упак", 6, 15, "1 л", "", "24 мес."]]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A supplier's catalogue folder that imports its assortment: tiers (the second 10 % off), company, mapping."""
    root = tmp_path / "supplier"
    root.mkdir()
    for name in ("company.yaml", "logo.svg"):
        shutil.copy(CATALOG_DIR / name, root)
    (root / "catalog.yaml").write_text("currency: RUB\ntiers:\n  - {id: small, name: до 100 тыс ₽}\n"
                                       "  - {id: big, name: от 100 тыс ₽, discount: 10}\n", encoding="utf-8")
    (root / "mapping.yaml").write_text("category: {tea: Чай, ware: Посуда}\nvolume: {s: small, b: big}\n", encoding="utf-8")
    (root / "import.yaml").write_text("params:\n  prices: {big: Цена опт}\n  min_order: Мин. заказ\n", encoding="utf-8")
    return root


@pytest.fixture
def feed(tmp_path: Path) -> Path:
    (tmp_path / "pics").mkdir()
    Image.new("RGB", (2000, 1000), "red").save(tmp_path / "pics" / "wide.png")
    Image.new("RGB", (300, 300), "blue").save(tmp_path / "pics" / "small.jpg")
    path = tmp_path / "feed.xml"
    path.write_text(FEED, encoding="utf-8")
    return path


async def imported(folder: Path, tmp_path: Path, name: str, data: bytes, base: Path | None = None, **options: object) -> Report:
    store = Store(folder, tmp_path / "data")
    async with httpx.AsyncClient() as client:
        return await run_import(store, name, data, mapping=read_mapping(folder, None), base=base or tmp_path, client=client,
                                **options)  # type: ignore[arg-type]


async def test_yml_feed_with_tree_pictures_params_and_bad_offers(folder: Path, feed: Path, tmp_path: Path) -> None:
    report = await imported(folder, tmp_path, "feed.xml", feed.read_bytes())
    assert report.status == APPLIED and report.read == 5 and report.accepted == 3
    assert report.per_category == [("Зелёный чай", 1), ("Посуда", 2)]
    assert report.rejected == ["offer 103: price: not a number: 'дорого'", "offer 104: category: unknown category '99'"]
    assert report.pictures == 3 and report.picture_problems[0].startswith("W-2: pics/missing.png: no such file")
    catalogue = Store(folder, tmp_path / "data").current()
    assert catalogue.version == report.version and catalogue.currency == "RUB"
    tea, kettle, bare = (next(p for p in catalogue.products if p.sku == sku) for sku in ("T-101", "W-1", "W-2"))
    assert tea.prices == {"small": 1200, "big": 1000}  # the tier's own param beats the discount
    assert kettle.prices == {"small": 2500, "big": Decimal("2250.00")} and not kettle.in_stock
    assert tea.min_order == 5 and tea.flags == ("sale",) and tea.description == "Японский зелёный чай"
    assert [(p.name, p.text()) for p in tea.params] == [("Страна", "Япония"), ("Вес", "100 г")]
    assert len(tea.pictures) == 2 and kettle.pictures == tea.pictures[1:] and bare.pictures == ()
    with Image.open(catalogue.root / tea.pictures[0]) as picture:  # normalised: JPEG, longest side 800 px
        assert picture.format == "JPEG" and picture.size == (800, 400)
    assert catalogue.buyer_categories({"category": ["tea"]}) == ("1", "2")  # mapped by name, with its children
    text = pdf_text(render_pdf(CatalogRequest(name="Тест", categories=("1", "2"), volume="big"), folder, tmp_path / "data"))
    for expected in ("Сенча", "Страна: Япония", "Ваша цена 1 000 ₽", "Нет в наличии", "РАСПРОДАЖА", "Без картинки"):
        assert expected in text, expected


@pytest.mark.parametrize("hostile", [BOMB, EXTERNAL], ids=["entity-bomb", "external-entity"])
async def test_hostile_xml_is_refused_and_the_catalogue_kept(folder: Path, feed: Path, tmp_path: Path, hostile: str) -> None:
    first = await imported(folder, tmp_path, "feed.xml", feed.read_bytes())
    report = await imported(folder, tmp_path, "evil.xml", hostile.encode())
    assert report.status == REFUSED and report.reason.startswith("refused: the feed declares entities")
    assert "root:" not in report.text("ru") and "lollol" not in report.text("ru")
    assert Store(folder, tmp_path / "data").current().version == first.version


async def test_a_failed_or_suspicious_import_leaves_the_working_catalogue(folder: Path, feed: Path, tmp_path: Path) -> None:
    first = await imported(folder, tmp_path, "feed.xml", feed.read_bytes())
    # the mapping names a category the new feed lacks: refused whole
    without_ware = FEED.replace('<category id="3">Посуда</category>', "").replace("<categoryId>3</categoryId>", "<categoryId>2</categoryId>")
    report = await imported(folder, tmp_path, "feed.xml", without_ware.encode())
    assert report.status == REFUSED and "mapping: category option 'ware' → unknown category 'Посуда'" in report.reason
    # two of three products vanish (more than 80 %? no: 67 %) → applied; then all but one of many → refused
    shrunk = FEED.replace("<vendorCode>W-1</vendorCode>", "<vendorCode>W-9</vendorCode>")
    report = await imported(folder, tmp_path, "feed.xml", shrunk.encode(), dry_run=True)
    assert report.status == DRY_RUN and report.added == ["W-9"] and report.removed == ["W-1"]
    assert Store(folder, tmp_path / "data").current().version == first.version  # a dry run changes nothing
    many = FEED.replace("</offers>", "".join(f'<offer id="x{i}"><vendorCode>X-{i}</vendorCode><name>Товар {i}</name><price>5</price>'
                                             f"<categoryId>3</categoryId></offer>" for i in range(20)) + "</offers>")
    assert (await imported(folder, tmp_path, "feed.xml", many.encode())).status == APPLIED
    report = await imported(folder, tmp_path, "feed.xml", feed.read_bytes())
    assert report.status == REFUSED and report.reason.startswith("suspicious: 20 of 23 products would vanish")
    assert len(Store(folder, tmp_path / "data").current().products) == 23
    assert (await imported(folder, tmp_path, "feed.xml", feed.read_bytes(), force=True)).status == APPLIED
    # pending: saved, not in use until activated
    report = await imported(folder, tmp_path, "feed.xml", shrunk.encode(), pending=True)
    store = Store(folder, tmp_path / "data")
    assert report.status == PENDING and "W-1" in {p.sku for p in store.current().products}
    store.activate(str(report.version))
    assert "W-9" in {p.sku for p in store.current().products}


def food_folder(folder: Path) -> None:
    (folder / "import.yaml").write_text(COLUMNS, encoding="utf-8")
    (folder / "mapping.yaml").write_text("category: {food: [Крупы, Масло]}\nvolume: {s: small, b: big}\n", encoding="utf-8")


async def test_xlsx_price_list_with_a_title_row(folder: Path, tmp_path: Path) -> None:
    food_folder(folder)
    book = Workbook()
    sheet = book.active
    sheet.append(["Прайс-лист ООО «Крупа», декабрь"])
    sheet.merge_cells("A1:K1")
    sheet.append([])
    sheet.append(HEADER)
    for row in ROWS:
        sheet.append(row)
    data = io.BytesIO()
    book.save(data)
    report = await imported(folder, tmp_path, "price.xlsx", data.getvalue())
    assert report.status == APPLIED, report.text("en")
    assert report.rejected == ["row 6 (F-3): prices: not a number: 'abc'"]
    assert report.per_category == [("Крупы", 2), ("Масло", 1)]
    catalogue = Store(folder, tmp_path / "data").current()
    buckwheat, rice, olive = catalogue.products
    assert buckwheat.prices == {"small": Decimal("95.5"), "big": 89} and buckwheat.unit == "kg" and buckwheat.flags == ("hit",)
    assert buckwheat.variants == ("25 кг", "50 кг") and buckwheat.stock == 1200 and buckwheat.params[0].value == "12 мес."
    assert rice.prices["small"] == Decimal("112.40") and not rice.in_stock and olive.unit == "packs"
    assert catalogue.money(buckwheat.prices["small"], "ru") == "95,50\u00a0₽"


async def test_cp1251_semicolon_csv_price_list(folder: Path, tmp_path: Path) -> None:
    food_folder(folder)
    lines = [";".join(HEADER), *(";".join(str(cell) for cell in row) for row in ROWS), ";;;;;;;;;;"]
    report = await imported(folder, tmp_path, "price.csv", "\r\n".join(lines).encode("cp1251"))
    assert report.status == APPLIED and report.read == 4 and report.accepted == 3
    assert report.rejected == ["row 4 (F-3): prices: not a number: 'abc'"]
    text = report.text("ru")
    assert "Прочитано позиций: 4, принято: 3." in text and "• Крупы: 2 товара" in text and "row 4 (F-3)" in text
    assert [p.name for p in Store(folder, tmp_path / "data").current().products] == ["Гречка ядрица", "Рис длиннозёрный",
                                                                                       "Масло оливковое"]


@pytest.fixture
def pictures_server() -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    """Serves /photo.png (ETag "v1", 304 when it matches), /page.html (not an image) and /huge.png (too big)."""
    asked: list[tuple[str, str | None]] = []
    png = io.BytesIO()
    Image.new("RGB", (1200, 1600), "green").save(png, "PNG")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            asked.append((self.path, self.headers.get("If-None-Match")))
            if self.path == "/photo.png" and self.headers.get("If-None-Match") == '"v1"':
                self.send_response(304)
                self.end_headers()
                return
            body, kind = {"/photo.png": (png.getvalue(), "image/png"), "/page.html": (b"<html></html>", "text/html"),
                          "/huge.png": (b"x" * 11 * 1024 * 1024, "image/png")}.get(self.path, (b"", "text/plain"))
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", kind)
            self.send_header("ETag", '"v1"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", asked
    server.shutdown()
    server.server_close()


async def test_pictures_from_urls_are_checked_and_revalidated(folder: Path, tmp_path: Path,
                                                              pictures_server: tuple[str, list[tuple[str, str | None]]]) -> None:
    url, asked = pictures_server
    offers = "".join(f'<offer id="{i}"><vendorCode>P-{i}</vendorCode><name>Товар</name><price>5</price><categoryId>3</categoryId>'
                     f"<picture>{url}{path}</picture></offer>"
                     for i, path in enumerate(("/photo.png", "/page.html", "/huge.png", "/gone.png", "ftp://x/y.png")))
    feed = FEED.split("<offers>")[0].replace('<category id="1">Чай</category>', "").replace(
        '<category id="2" parentId="1">Зелёный чай</category>', "") + f"<offers>{offers.replace(url + 'ftp', 'ftp')}</offers></shop></yml_catalog>"
    (folder / "mapping.yaml").write_text("category: {ware: Посуда}\nvolume: {s: small}\n", encoding="utf-8")
    report = await imported(folder, tmp_path, "feed.xml", feed.encode())
    assert report.status == APPLIED and report.pictures == 1, report.text("en")
    problems = "\n".join(report.picture_problems)
    for expected in ("P-1: " + url + "/page.html: not an image (text/html)", "P-2: " + url + "/huge.png: larger than 10 MB",
                     "P-3: " + url + "/gone.png: HTTP 404", "P-4: ftp://x/y.png: only http and https URLs"):
        assert expected in problems
    photo = Store(folder, tmp_path / "data").current().products[0].pictures[0]
    with Image.open(tmp_path / "data" / "catalog" / photo) as picture:
        assert picture.size == (600, 800)
    asked.clear()
    again = await imported(folder, tmp_path, "feed.xml", feed.encode())
    assert again.pictures == 1 and ("/photo.png", '"v1"') in asked  # revalidated with its ETag, answered 304
    assert again.version == report.version


def test_the_sample_catalogue_still_loads_from_its_folder() -> None:
    assert len(load_catalogue(CATALOG_DIR).products) == 64


def test_the_command_prints_the_report_records_it_and_one_line_errors(folder: Path, feed: Path, tmp_path: Path) -> None:
    env = {"CATALOG_DIR": str(folder), "LOG_LEVEL": "WARNING", "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'optobot.sqlite3'}"}
    checked = optobot(tmp_path, "catalog", "import", str(feed), "--dry-run", **env)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("Проверка ") and "Отклонено (2):" in checked.stdout and not (tmp_path / "data" / "catalog" / "active.json").exists()
    applied = optobot(tmp_path, "catalog", "import", str(feed), **env)
    assert applied.returncode == 0 and applied.stdout.startswith("Каталог обновлён из ")
    for argv, expected in ((["missing.xml"], "missing.xml: no such file"), ([str(feed), "--mapping", "nope.yaml"], "nope.yaml: no such file")):
        failed = optobot(tmp_path, "catalog", "import", *argv, **env)
        assert failed.returncode == 2 and failed.stderr.strip() == f"optobot: catalog import: {expected}" and not failed.stdout
    refused = optobot(tmp_path, "catalog", "import", str(feed), **{**env, "CATALOG_DIR": str(CATALOG_DIR)})  # the feed lacks its categories
    assert refused.returncode == 1 and refused.stdout.startswith("Импорт ") and "Traceback" not in refused.stderr

    with sqlite3.connect(tmp_path / "optobot.sqlite3") as history:  # in the version history, as uploads and refreshes are
        rows = history.execute("SELECT origin, source, status, version, report, finished_at FROM catalog_imports ORDER BY id").fetchall()
    version = Store(folder, tmp_path / "data").current().version
    assert [row[:4] for row in rows] == [("command", str(feed), DRY_RUN, version), ("command", str(feed), APPLIED, version),
                                        ("command", str(feed), REFUSED, None)]
    assert [row[4].splitlines()[0] for row in rows] == [checked.stdout.splitlines()[0], applied.stdout.splitlines()[0],
                                                       refused.stdout.splitlines()[0]]
    assert all(row[5] for row in rows)