"""The personalised PDF catalogue: content, escaping, the safe fetcher, cache and pool."""
from __future__ import annotations

import asyncio
import io
import os
import re
import shutil
import signal
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from pypdf import PdfReader

from bot.catalog.fetcher import RefusedURL, SafeFetcher
from bot.catalog.model import load_catalogue, mapping_problems
from bot.catalog.render import TEMPLATES_DIR, CatalogRenderer, CatalogRequest, cache_key, render_pdf, variants
from bot.catalog.service import catalog_filename
from bot.config import DEFAULT_CATALOG_DIR as CATALOG_DIR
from bot.config import DEFAULT_QUIZ
from bot.quiz import load_quiz
from bot.workers import WorkerDied, WorkerPool, loaded_modules
from tests.crm_support import eventually

SKU = re.compile(r"\b[WMKSA]-\d{3}\b")


def pdf_text(pdf: bytes) -> str:
    """All text of a PDF, whitespace (incl. no-break spaces) folded to single spaces."""
    reader = PdfReader(io.BytesIO(pdf))
    text = "\n".join(page.extract_text() for page in reader.pages)
    return re.sub(r"\s+", " ", text)


def pdf_text_of(pages: object) -> str:
    """The text of some pages of a PDF, whitespace folded."""
    return re.sub(r"\s+", " ", "\n".join(page.extract_text() for page in pages))


def skus(text: str) -> list[str]:
    """SKUs in order of first appearance."""
    return list(dict.fromkeys(SKU.findall(text)))


@pytest.fixture(scope="module")
def products() -> dict[str, object]:
    return {p.sku: p for p in load_catalogue(CATALOG_DIR).products}


@pytest.fixture(scope="module")
def women_shoes_pdf() -> bytes:
    request = CatalogRequest(name="Ирина Волкова", company="ИП Волкова", city="Казань",
                             categories=("shoes", "women"), volume="100to300k")
    return render_pdf(request, CATALOG_DIR)


@pytest.fixture
def catalog_copy(tmp_path: Path) -> Path:
    """A private copy of the sample catalogue (with the default template) that a test may edit."""
    copy = Path(shutil.copytree(CATALOG_DIR, tmp_path / "catalog"))
    shutil.copy(TEMPLATES_DIR / "catalog.html.j2", copy)
    return copy


@pytest.fixture
def http_trap() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server; yields its base URL and the paths it was asked for."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            hits.append(self.path)
            body = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
            self.send_response(200)
            self.send_header("Content-Type", "image/svg+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    # the trap works: a real client is served and recorded
    with urllib.request.urlopen(f"{url}/probe", timeout=5) as response:
        assert response.status == 200
    assert hits == ["/probe"]
    hits.clear()
    yield url, hits
    server.shutdown()
    server.server_close()


# --------------------------------------------------------------- sample data
def test_sample_catalogue_is_mapped_to_its_quiz(products: dict[str, object]) -> None:
    catalogue = load_catalogue(CATALOG_DIR)
    assert mapping_problems(catalogue, load_quiz(DEFAULT_QUIZ)) == []
    for category in catalogue.categories:
        assert len(catalogue.in_category(category.id)) >= 12, category
        assert category.name and category.name_en
    assert len(products) >= 60 and len(catalogue.tiers) == 4
    for product in catalogue.products:
        assert product.pictures and all((CATALOG_DIR / p).is_file() for p in product.pictures), product.sku


def test_request_is_validated_and_normalised() -> None:
    request = CatalogRequest(categories=("shoes", "women", "shoes"), volume="over1m")
    assert request.categories == ("shoes", "women")
    for bad in ({"language": "de"}, {"limit": 0}):
        with pytest.raises(ValueError):
            CatalogRequest(**bad)
    for bad in ({"categories": ("hats",)}, {"volume": "huge"}):  # ids the catalogue lacks
        with pytest.raises(ValueError, match="hats|huge"):
            render_pdf(CatalogRequest(**bad), CATALOG_DIR)


# ------------------------------------------------------------------- content
def test_pdf_is_personalised(women_shoes_pdf: bytes, products: dict[str, object]) -> None:
    reader = PdfReader(io.BytesIO(women_shoes_pdf))
    assert len(reader.pages) >= 2
    text = pdf_text(women_shoes_pdf)
    for expected in ("Ирина Волкова", "ИП Волкова", "Казань", "Женская одежда", "Обувь",
                     "Другие категории", "Тестовая партия", "Анна Соколова",
                     "+7 (900) 000-12-34", "@optliniya_anna"):
        assert expected in text, expected
    order = skus(text)
    assert len(order) == len(products)
    # the buyer's categories (catalogue order: women, then shoes) come first
    chosen = [s for category in ("women", "shoes")
              for s, p in products.items() if p.category == category]
    assert order[:len(chosen)] == chosen
    assert text.index("Другие категории") > text.index(chosen[-1])
    # the buyer's tier price is shown, other tiers' prices are not (W-101: 1 350 vs 1 450)
    assert "Ваша цена 1 350 ₽" in text
    assert "1 450 ₽" not in text


def test_different_answers_give_different_catalogues(women_shoes_pdf: bytes) -> None:
    other = render_pdf(CatalogRequest(name="Ирина Волкова", company="ИП Волкова",
                                      city="Казань", categories=("men",), volume="over1m"),
                       CATALOG_DIR)
    assert other != women_shoes_pdf
    first, second = pdf_text(women_shoes_pdf), pdf_text(other)
    assert skus(first)[0] == "W-101" and skus(second)[0] == "M-201"
    assert "Ваша цена 1 350 ₽" in first and "Ваша цена 1 170 ₽" in second  # W-101
    assert "Мужская одежда" in second.split("Другие категории")[0]


def test_unknown_volume_lists_every_tier() -> None:
    text = pdf_text(render_pdf(CatalogRequest(name="Олег", categories=("women",), limit=3),
                               CATALOG_DIR))
    assert "Объём закупки не указан" in text
    # W-101: all four tiers with their prices
    for tier, price in (("до 100 тыс ₽", "1 450 ₽"), ("100–300 тыс ₽", "1 350 ₽"),
                        ("300 тыс–1 млн ₽", "1 260 ₽"), ("более 1 млн ₽", "1 170 ₽")):
        assert f"{tier} {price}" in text
    assert "Ваша цена" not in text
    assert skus(text) == ["W-101", "W-102", "W-103"]  # limit caps the product count


def test_english_catalogue() -> None:
    text = pdf_text(render_pdf(CatalogRequest(name="Jane", categories=("kids",),
                                              volume="upto100k", language="en", limit=4),
                               CATALOG_DIR))
    for expected in ("Children's clothing", "Baby bodysuits, set of 3", "Your price 690 ₽",
                     "Test batch", "Anna Sokolova"):
        assert expected in text, expected
    assert "Детская одежда" not in text


def test_markup_in_buyer_values_is_printed_literally() -> None:
    request = CatalogRequest(name="<script>alert(1)</script>",
                             company="<b>Bold</b> & <i>Co</i>",
                             city='<img src="http://127.0.0.1:1/x.png">', limit=1)
    text = pdf_text(render_pdf(request, CATALOG_DIR))
    assert "<script>alert(1)</script>" in text
    assert "<b>Bold</b> & <i>Co</i>" in text
    assert '<img src="http://127.0.0.1:1/x.png">' in text


# ------------------------------------------------------------------ fetching
def test_fetcher_serves_only_catalogue_files(
    catalog_copy: Path, tmp_path: Path, http_trap: tuple[str, list[str]],
) -> None:
    url, hits = http_trap
    secret = tmp_path / "secret.svg"
    secret.write_text("<svg/>")
    (catalog_copy / "images" / "link.svg").symlink_to(secret)
    fetcher = SafeFetcher(catalog_copy)

    response = fetcher.fetch((catalog_copy / "images" / "W-101.svg").as_uri())
    assert response.read() == (catalog_copy / "images" / "W-101.svg").read_bytes()
    assert response.content_type == "image/svg+xml"

    for refused in (
        "file:///etc/passwd",
        f"file://{catalog_copy}/images/../../secret.svg",
        f"file://{catalog_copy}/images/%2e%2e/%2e%2e/secret.svg",
        (catalog_copy / "images" / "link.svg").as_uri(),
        (catalog_copy / "images" / "missing.svg").as_uri(),
        f"file://localhost.evil/{catalog_copy}/logo.svg",
        f"{url}/image.svg",
        "https://example.com/image.svg",
        "ftp://127.0.0.1/x.svg",
        "data:image/svg+xml,%3Csvg%2F%3E",
        "images/W-101.svg",
    ):
        with pytest.raises(RefusedURL):
            fetcher.fetch(refused)
    assert hits == []


def test_render_never_fetches_outside_the_catalogue(
    catalog_copy: Path, tmp_path: Path, http_trap: tuple[str, list[str]],
) -> None:
    url, hits = http_trap
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="200" height="40">'
        '<text x="5" y="20" font-size="12">SECRETMARKER</text></svg>')
    (catalog_copy / "images" / "inside.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="200" height="40">'
        '<text x="5" y="20" font-size="12">INSIDEMARKER</text></svg>')
    (catalog_copy / "images" / "link.svg").symlink_to(outside / "secret.svg")
    template = catalog_copy / "catalog.html.j2"
    hostile = (
        f'<link rel="stylesheet" href="{url}/style.css">'
        f'<style>@import url("{url}/import.css");'
        f' body {{ background: url("{url}/bg.png") }}</style>'
        '<img src="images/inside.svg">'
        '<img src="file:///etc/passwd">'
        f'<img src="file://{outside}/secret.svg">'
        '<img src="../outside/secret.svg">'
        '<img src="images/link.svg">'
        f'<img src="{url}/img.svg">'
        f'<object data="{url}/object.svg"></object>'
        f'<embed src="{url}/embed.svg">'
        f'<svg><image href="{url}/svg-image.svg" width="5" height="5"/></svg>'
    )
    template.write_text(template.read_text().replace("</body>", hostile + "</body>"))

    text = pdf_text(render_pdf(CatalogRequest(name="Test", limit=1), catalog_copy))

    assert "INSIDEMARKER" in text  # the catalogue's own files are served…
    assert "SECRETMARKER" not in text  # …nothing outside it…
    assert hits == []  # …and no network request at all


# ------------------------------------------------------------ cache and pool
def test_cache_key_tracks_request_and_catalogue(catalog_copy: Path) -> None:
    request = CatalogRequest(name="Анна", categories=("men",), volume="over1m")
    key = cache_key(request, catalog_copy)
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert cache_key(CatalogRequest(name="Анна", categories=("men",), volume="over1m"),
                     catalog_copy) == key
    assert cache_key(CatalogRequest(name="Анна", categories=("men",)), catalog_copy) != key
    products = catalog_copy / "catalog.yaml"
    products.write_text(products.read_text().replace("1450", "1490"))
    assert cache_key(request, catalog_copy) != key


async def test_cached_catalogue_is_not_rendered_again(renderer: CatalogRenderer) -> None:
    await renderer.warm_up()
    request = CatalogRequest(name="Кеш Тестович", categories=("kids",), volume="300kto1m")
    before = renderer.rendered
    path = await renderer.render(request)
    assert renderer.rendered == before + 1
    assert path == renderer.cache_dir / f"{cache_key(request, CATALOG_DIR)}.pdf"
    assert "Кеш Тестович" in pdf_text(path.read_bytes())
    stamp = path.stat().st_mtime_ns

    assert await renderer.render(request) == path
    assert renderer.rendered == before + 1
    assert path.stat().st_mtime_ns == stamp


async def test_concurrent_requests_share_one_render(renderer: CatalogRenderer) -> None:
    request = CatalogRequest(name="Одновременно", categories=("accessories",), limit=6)
    before = renderer.rendered
    paths = await asyncio.gather(*(renderer.render(request) for _ in range(5)))
    assert renderer.rendered == before + 1
    assert len(set(paths)) == 1 and paths[0].is_file()
    assert not [p for p in os.listdir(renderer.cache_dir) if p.endswith(".tmp")]
    # a different buyer is a different render
    other = await renderer.render(CatalogRequest(name="Другой", categories=("accessories",),
                                                 limit=6))
    assert other != paths[0] and renderer.rendered == before + 2


async def test_pool_recovers_when_a_worker_dies(tmp_path: Path) -> None:
    renderer = CatalogRenderer(CATALOG_DIR, tmp_path / "cache", workers=1)
    try:
        await renderer.warm_up()
        [pid] = renderer.pool.pids
        os.kill(pid, signal.SIGKILL)
        path = await renderer.render(CatalogRequest(name="После сбоя", limit=2))
        assert "После сбоя" in pdf_text(path.read_bytes())
        assert renderer.rendered == 1
    finally:
        renderer.close()


async def test_workers_import_only_what_rendering_needs(renderer: CatalogRenderer) -> None:
    """The render workers are ``python -m bot.workers`` children: no aiogram, SQLAlchemy or app code."""
    await renderer.warm_up()
    loop = asyncio.get_running_loop()
    modules = set(await loop.run_in_executor(renderer.pool, loaded_modules))
    assert {"weasyprint", "jinja2", "bot.catalog.render"} <= modules
    heavy = {m for m in modules if m.split(".")[0] in ("aiogram", "sqlalchemy", "aiohttp", "asyncpg")
             or m in ("bot.app", "bot.cli", "bot.config", "bot.db", "bot.catalog.service")}
    assert heavy == set()
    assert len(set(renderer.pool.pids)) == renderer.workers and os.getpid() not in renderer.pool.pids


async def test_worker_pool_grows_on_demand_and_reports_a_job_that_kills_its_worker() -> None:
    pool = WorkerPool(2)
    try:
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(pool, pow, 2, 10) == 1024
        assert await loop.run_in_executor(pool, pow, 2, 3) == 8
        assert len(pool.pids) == 1  # one job at a time: one worker
        with pytest.raises(ZeroDivisionError, match="division"):
            await loop.run_in_executor(pool, divmod, 1, 0)
        with pytest.raises(WorkerDied, match="died twice"):
            await loop.run_in_executor(pool, os.abort)
        assert await loop.run_in_executor(pool, pow, 3, 2) == 9  # a new worker took over
    finally:
        pool.shutdown()
    assert pool.pids == []


# ------------------------------------------------------- cover + shared body
def few_products(catalog: Path, count: int) -> Path:
    """Keep the first ``count`` products of a catalogue copy (fast renders)."""
    products = catalog / "catalog.yaml"
    data = yaml.safe_load(products.read_text(encoding="utf-8"))
    data["products"] = data["products"][:count]
    products.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return catalog


async def test_buyers_of_one_variant_share_one_body(renderer: CatalogRenderer) -> None:
    """Each buyer's catalogue is their own cover composed with the body rendered once for the variant."""
    first, second = (CatalogRequest(name=name, company=company, city=city, categories=("kids", "shoes"),
                                    volume="300kto1m")
                     for name, company, city in (("Вера Первая", "ООО «Один»", "Тверь"),
                                                 ("Глеб Второй", "ИП Второй", "Омск")))
    before, bodies = renderer.rendered, renderer.bodies
    one, two = [PdfReader(await renderer.render(request)) for request in (first, second)]
    assert renderer.rendered == before + 2 and renderer.bodies == bodies + 1
    assert renderer.body_path(first) == renderer.body_path(second) and renderer.body_path(first).is_file()
    covers = [pdf_text_of(reader.pages[:1]) for reader in (one, two)]
    assert "Вера Первая" in covers[0] and "Тверь" in covers[0] and "Глеб Второй" not in covers[0]
    assert "Глеб Второй" in covers[1] and "ИП Второй" in covers[1] and "Вера Первая" not in covers[1]
    assert pdf_text_of(one.pages[1:]) == pdf_text_of(two.pages[1:])  # the same body…
    rest = pdf_text_of(one.pages[1:])
    assert skus(rest)[0] == "K-301" and "Ваша цена" in rest and "Вера" not in rest  # …with nothing personal
    assert one.metadata.title == "Оптовый каталог ОптЛиния — Вера Первая"


async def test_a_new_catalogue_version_renders_new_bodies(catalog_copy: Path, tmp_path: Path) -> None:
    catalog = few_products(catalog_copy, 3)
    renderer = CatalogRenderer(catalog, tmp_path / "cache", workers=1)
    try:
        request = CatalogRequest(name="Анна", categories=("women",), volume="upto100k")
        old = await renderer.render(request)
        assert "1 450 ₽" in pdf_text(old.read_bytes()) and renderer.bodies == 1
        old_version = renderer.body_path(request).parent
        products = catalog / "catalog.yaml"
        products.write_text(products.read_text(encoding="utf-8").replace("upto100k: 1450", "upto100k: 1490"),
                            encoding="utf-8")
        new = await renderer.render(request)
        assert new != old and renderer.bodies == 2
        text = pdf_text(new.read_bytes())
        assert "1 490 ₽" in text and "1 450 ₽" not in text
        assert renderer.body_path(request).parent != old_version  # bodies are kept per catalogue version
    finally:
        renderer.close()


async def test_prerender_draws_the_bodies_ahead_in_the_background(catalog_copy: Path, tmp_path: Path) -> None:
    renderer = CatalogRenderer(few_products(catalog_copy, 2), tmp_path / "cache", workers=1)
    stale = tmp_path / "cache" / "bodies" / "an-old-version"
    stale.mkdir(parents=True)
    (stale / "body.pdf").write_bytes(b"%PDF-")
    try:
        stop = asyncio.Event()
        ahead = asyncio.create_task(renderer.prerender(stop, ("en", "ru")))
        order = variants(load_catalogue(catalog_copy), ("en", "ru"))
        assert len(order) == len(set(order)) == 2 * 32 * (4 + 1)  # every category set the quiz maps to × tier (or none) × language
        assert order[0].categories == ("women",) and order[0].language == "en"
        first_three = [renderer.body_path(request) for request in order[:3]]
        await eventually(lambda: all(path.is_file() for path in first_three), timeout=120)
        stop.set()
        await asyncio.wait_for(ahead, 60)
        assert not stale.exists()  # bodies of other versions are deleted
        drawn = renderer.bodies
        assert drawn >= 3 and not renderer.body_path(order[-1]).exists()  # stopped before the end
        request = CatalogRequest(name="Быстрый", company="ООО «Б»", categories=("women",), volume="upto100k",
                                 language="en")
        assert "Быстрый" in pdf_text((await renderer.render(request)).read_bytes())
        assert renderer.bodies == drawn  # only the cover was drawn for this buyer
    finally:
        renderer.close()


async def test_prerender_starts_again_for_a_new_catalogue_version(catalog_copy: Path, tmp_path: Path) -> None:
    catalog = few_products(catalog_copy, 1)
    renderer = CatalogRenderer(catalog, tmp_path / "cache", workers=1)
    try:
        stop = asyncio.Event()
        ahead = asyncio.create_task(renderer.prerender(stop, ("ru",), every=0.2))
        first = variants(load_catalogue(catalog), ("ru",))[0]
        old = renderer.body_path(first)
        await eventually(old.is_file, timeout=120)
        products = catalog / "catalog.yaml"
        products.write_text(products.read_text(encoding="utf-8").replace("upto100k: 1450", "upto100k: 1490"), encoding="utf-8")
        new = renderer.body_path(first)
        assert new.parent != old.parent
        await eventually(new.is_file, timeout=120)  # the new version's bodies are drawn without a restart…
        assert "1 490 ₽" in pdf_text(new.read_bytes())
        await eventually(lambda: not old.parent.exists(), timeout=30)  # …and the old version's are deleted
        stop.set()
        await asyncio.wait_for(ahead, 60)
    finally:
        renderer.close()


def test_the_file_is_named_after_the_supplier_and_the_buyer() -> None:
    assert catalog_filename("ОптЛиния", CatalogRequest(name="Анна Петрова", company="ИП")) == "Каталог ОптЛиния — Анна Петрова.pdf"
    assert catalog_filename("ОптЛиния", CatalogRequest(company="ООО «Ромашка»")) == "Каталог ОптЛиния — ООО «Ромашка».pdf"
    assert catalog_filename("OptLine", CatalogRequest(name="Jane", language="en")) == "OptLine catalogue — Jane.pdf"
    assert catalog_filename("ОптЛиния", CatalogRequest()) == "Каталог ОптЛиния.pdf"
    hostile = catalog_filename("ОптЛиния", CatalogRequest(name="../../etc/passwd\x00 <b>" + "я" * 300))
    assert hostile.startswith("Каталог ОптЛиния — .._.._etc_passwd_ _b_я") and hostile.endswith("я.pdf") and len(hostile) <= 124


def test_the_pdf_reads_as_a_buyer_would_read_it(women_shoes_pdf: bytes) -> None:
    """Issue 8's polish: no «Размеры: единый размер», one dash style, a labelled next-tier price, no case after «для»."""
    text = pdf_text(women_shoes_pdf)
    assert "единый размер" not in text and "300 тыс – 1 млн" not in text
    assert "Цена при закупке 300 тыс–1 млн ₽: 1 260 ₽" in text  # W-101, the buyer's tier is 100–300 тыс ₽
    assert "Подготовлен для" not in text and "Получатель Ирина Волкова" in text
    assert "64 модели в каталоге" in text and "ТЕСТОВАЯ ПАРТИЯ Условия — на последней странице" in text
