"""The buyer's personalised PDF catalogue: HTML from a jinja2 template, PDF by WeasyPrint.

A catalogue is a one-page personal cover (the buyer's name, company and city) followed by
the *body*: every page after the cover, which depends only on the buyer's categories, tier
and language. The body is rendered once per catalogue version (:func:`fingerprint`) and
variant, and cached on disk (``cache_dir/bodies/<version>/``); a buyer's catalogue is
their cover (~40 ms) put in front of it with pypdf (:func:`compose`). :meth:`CatalogRenderer.prerender`
renders every variant's body in the background after a start or a new catalogue version.

The functions are synchronous and CPU-bound; :class:`CatalogRenderer` runs them in a pool
of lean worker processes (:mod:`bot.workers`), caches each buyer's PDF under
``cache_dir/<cache_key>.pdf`` and never renders on the event loop thread. WeasyPrint (and
the Pango it loads) is imported only in the workers. The workers import this module: it
imports no aiogram, SQLAlchemy or app code.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import jinja2
from markupsafe import Markup

from bot import texts
from bot.catalog.model import Catalogue, Product, load_catalogue
from bot.catalog.store import Store
from bot.workers import WorkerPool

if TYPE_CHECKING:
    from weasyprint import CSS
    from weasyprint.text.fonts import FontConfiguration

    from bot.catalog.fetcher import SafeFetcher

log = logging.getLogger(__name__)

#: The PDF's default template and stylesheet (a catalogue folder may bring its own).
TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "catalog_templates"
TEMPLATE = "catalog.html.j2"
STYLESHEET = "catalog.css"
#: Files outside the catalogue folder whose edits change the PDF (the code, its texts, the default templates).
_CODE_FILES = (*sorted(Path(__file__).parent.glob("*.py")),
               *(texts.TEXTS_DIR / f"catalog.{lang}.yaml" for lang in texts.LANGUAGES),
               *sorted(p for p in TEMPLATES_DIR.iterdir() if p.is_file()))


@dataclass(frozen=True)
class CatalogRequest:
    """What one buyer's catalogue depends on (the quiz answers and the contact).

    Missing texts may be ``None`` (stored as ``""``); ``categories`` are catalogue category
    ids (deduplicated; shown in catalogue order); ``volume`` is a catalogue tier id or ``None``
    (all tiers shown); ``limit`` caps the number of products; ``per_category`` caps each category
    (хиты, новинки, then what is in stock are kept; the buyer's categories first, the others while
    the PDF holds at most ``per_category`` × max(2, number of the buyer's categories) products). Ids
    are checked against the catalogue when it is rendered.
    """

    name: str = ""
    company: str = ""
    city: str = ""
    categories: tuple[str, ...] = ()
    volume: str | None = None
    language: str = "ru"
    limit: int | None = field(default=None, kw_only=True)
    per_category: int | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if self.language not in texts.LANGUAGES:
            raise ValueError(f"unsupported language {self.language!r}")
        if self.limit is not None and self.limit < 1 or self.per_category is not None and self.per_category < 1:
            raise ValueError("limit and per_category must be positive")
        for name in ("name", "company", "city"):
            object.__setattr__(self, name, " ".join(str(getattr(self, name) or "").split()))
        object.__setattr__(self, "categories", tuple(dict.fromkeys(self.categories)))

    @property
    def impersonal(self) -> CatalogRequest:
        """The request without the buyer's name, company and city: what the body depends on."""
        return replace(self, name="", company="", city="")


#: Quiz category options beyond which only single options and pairs are prerendered (the sets grow fast).
MANY_OPTIONS = 6
#: How often the prerender looks for a new catalogue version once every body of the current one is drawn (seconds).
PRERENDER_CHECK_S = 30


def variants(catalogue: Catalogue, languages: tuple[str, ...] = texts.LANGUAGES,
             per_category: int | None = None) -> list[CatalogRequest]:
    """Every body a buyer can get: the category sets the quiz's options map to (the likeliest, a single option, first;
    only up to pairs when there are many options) × tiers (and no tier) × ``languages``."""
    options = list(catalogue.mapping.category)
    sizes = (1, 2, 3, 4, 5, 0) if len(options) <= MANY_OPTIONS else (1, 2, 0)
    sets = list(dict.fromkeys(catalogue.buyer_categories({"category": list(combo)})
                              for size in sizes for combo in itertools.combinations(options, size)))
    return [CatalogRequest(categories=combo, volume=tier, language=language, per_category=per_category)
            for language in languages for combo in sets for tier in (*(t.id for t in catalogue.tiers), None)]


def fingerprint(catalog_dir: Path, data_dir: Path | None = None) -> str:
    """A digest of the names, sizes and mtimes of every file the PDF is made from (and of the imported version in use)."""
    files = sorted(p for p in catalog_dir.rglob("*") if p.is_file())
    digest = hashlib.sha256(Store(catalog_dir, data_dir).stamp().encode() if data_dir else b"")
    for name, path in (*((p.relative_to(catalog_dir), p) for p in files),
                       *((p.name, p) for p in _CODE_FILES)):
        stat = path.stat()
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cache_key(request: CatalogRequest, catalog_dir: Path, data_dir: Path | None = None, *, version: str | None = None) -> str:
    """sha256 hex of the request and the catalogue folder's :func:`fingerprint`."""
    payload = json.dumps(
        [request.name, request.company, request.city, request.categories,
         request.volume, request.language, request.limit, request.per_category, version or fingerprint(catalog_dir, data_dir)],
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class _Bundle:
    """Everything parsed once per process for one version of the catalogue folder."""

    catalogue: Catalogue
    template: jinja2.Template
    stylesheet: CSS
    fonts: FontConfiguration
    fetcher: SafeFetcher


@lru_cache(maxsize=2)
def _bundle(catalog_dir: Path, data_dir: Path | None, version: str) -> _Bundle:
    """Load the catalogue in use (an imported version under ``data_dir``, else the folder's); ``version`` (its fingerprint)
    keys the cache."""
    from weasyprint import CSS
    from weasyprint.text.fonts import FontConfiguration

    from bot.catalog.fetcher import SafeFetcher

    texts.catalogue.cache_clear()  # the catalogue's texts may have changed too
    catalogue = Store(catalog_dir, data_dir).current() if data_dir else load_catalogue(catalog_dir)
    fetcher = SafeFetcher(catalog_dir, TEMPLATES_DIR, catalogue.root)
    fonts = FontConfiguration()
    stylesheet = catalog_dir / STYLESHEET  # a catalogue folder may bring its own template and stylesheet
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([catalog_dir, TEMPLATES_DIR]), autoescape=True,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    return _Bundle(
        catalogue=catalogue,
        template=env.get_template(TEMPLATE),
        stylesheet=CSS(filename=str(stylesheet if stylesheet.is_file() else TEMPLATES_DIR / STYLESHEET), url_fetcher=fetcher,
                       font_config=fonts),
        fonts=fonts,
        fetcher=fetcher,
    )


def _translator(language: str) -> Callable[..., str]:
    """``tx(key, **values)``: the ``catalog.<key>`` text with ``values`` escaped in."""
    def tx(key: str, **values: Any) -> str:
        text = texts.raw(language, f"catalog.{key}")
        return Markup.escape(text).format(**values) if values else text
    return tx


def _check(request: CatalogRequest, catalogue: Catalogue) -> None:
    """Raise ``ValueError`` if ``request`` names a category or tier the catalogue lacks."""
    unknown = set(request.categories) - {c.id for c in catalogue.categories}
    if unknown:
        raise ValueError(f"unknown categories {sorted(unknown)}")
    if request.volume is not None and request.volume not in {t.id for t in catalogue.tiers}:
        raise ValueError(f"unknown volume tier {request.volume!r}")


def _sections(request: CatalogRequest, catalogue: Catalogue) -> list[dict[str, Any]]:
    """Product groups by category, in catalogue order: the buyer's categories first, then the others."""
    chosen = [c.id for c in catalogue.categories if c.id in request.categories]
    order = [*chosen, *(c.id for c in catalogue.categories if c.id not in chosen)]
    left = request.limit if request.limit is not None else len(catalogue.products)
    if request.per_category:
        left = min(left, request.per_category * max(2, len(chosen)))
    sections = []
    for category in order:
        items: list[Product] = _pick(catalogue.in_category(category), request.per_category)[:left]
        left -= len(items)
        if items:
            sections.append({"category": catalogue.category(category), "products": items,
                             "other": bool(chosen) and category not in chosen})
    return sections


def _pick(products: list[Product], cap: int | None) -> list[Product]:
    """At most ``cap`` of a category's products, in catalogue order: хиты, новинки, then those in stock are kept first."""
    if cap is None or len(products) <= cap:
        return products
    ranked = sorted(range(len(products)), key=lambda i: (not products[i].flagged("hit"), not products[i].flagged("new"),
                                                         not products[i].in_stock, i))
    kept = set(ranked[:cap])
    return [product for i, product in enumerate(products) if i in kept]


def _discounts(catalogue: Catalogue) -> dict[str, int]:
    """Each tier's average discount off the first tier's prices, in whole percent."""
    first = catalogue.tiers[0].id
    base = sum(p.prices[first] for p in catalogue.products) or 1
    return {tier.id: round(100 - 100 * sum(p.prices[tier.id] for p in catalogue.products) / base)
            for tier in catalogue.tiers}


def _html(request: CatalogRequest, bundle: _Bundle, cover_only: bool = False) -> str:
    """The catalogue (or only its cover) as HTML (every buyer value escaped by jinja2's autoescape)."""
    _check(request, bundle.catalogue)
    tx = _translator(request.language)
    catalogue = bundle.catalogue

    def money(amount: Any) -> str:
        return catalogue.money(amount, request.language)

    def loc(value: Any) -> Any:
        """A company.yaml value in the request's language (``{ru: …, en: …}``)."""
        return value.get(request.language, value.get("ru")) if isinstance(value, dict) else value

    sections = _sections(request, catalogue)
    return bundle.template.render(
        request=request, cover_only=cover_only, lang=request.language, tx=tx, money=money, loc=loc,
        count=lambda n: texts.plural(request.language, "catalog.products_count", n),
        sections=sections, company=catalogue.company, catalogue=catalogue, tiers=catalogue.tiers,
        discounts=_discounts(catalogue),
        product_count=sum(len(s["products"]) for s in sections),
    )


def _draw(request: CatalogRequest, catalog_dir: Path, data_dir: Path | None, cover_only: bool) -> bytes:
    from weasyprint import HTML

    catalog_dir = catalog_dir.resolve()
    bundle = _bundle(catalog_dir, data_dir, fingerprint(catalog_dir, data_dir))
    document = HTML(string=_html(request, bundle, cover_only), base_url=catalog_dir.as_uri() + "/",
                    url_fetcher=bundle.fetcher)
    return document.write_pdf(stylesheets=[bundle.stylesheet], font_config=bundle.fonts)


def render_body(request: CatalogRequest, catalog_dir: Path, data_dir: Path | None = None) -> bytes:
    """The whole catalogue for ``request`` without the buyer's personal details: the same PDF for every
    buyer of its categories, tier and language (its first page is an impersonal cover)."""
    return _draw(request.impersonal, catalog_dir, data_dir, cover_only=False)


def render_cover(request: CatalogRequest, catalog_dir: Path, data_dir: Path | None = None) -> bytes:
    """The buyer's one-page cover (their name, company and city, escaped)."""
    return _draw(request, catalog_dir, data_dir, cover_only=True)


def compose(cover: bytes, body: bytes) -> bytes:
    """The cover's first page, then the body's pages after its own cover; the cover's metadata."""
    from pypdf import PdfReader, PdfWriter

    cover_reader, body_reader = PdfReader(io.BytesIO(cover)), PdfReader(io.BytesIO(body))
    writer = PdfWriter()
    writer.add_page(cover_reader.pages[0])
    for page in body_reader.pages[1:]:
        writer.add_page(page)
    if cover_reader.metadata:
        writer.add_metadata(dict(cover_reader.metadata))
    output = io.BytesIO()
    writer.write(output)
    return output.getvalue()


def render_pdf(request: CatalogRequest, catalog_dir: Path, data_dir: Path | None = None) -> bytes:
    """The buyer's whole catalogue as A4 PDF bytes, cover and body drawn here (synchronous); ``data_dir`` holds imported
    catalogue versions."""
    return compose(render_cover(request, catalog_dir, data_dir), render_body(request, catalog_dir, data_dir))


PANGO_PACKAGES = "libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core"


def require_weasyprint() -> None:
    """Raise :class:`ConfigError` naming the system packages to install if WeasyPrint can't load Pango.

    WeasyPrint is tried in a child process: the bot's own process never loads it (~25 MB)."""
    from bot.config import ConfigError  # here: bot.config imports pydantic and SQLAlchemy, the workers need neither

    probe = subprocess.run([sys.executable, "-c", "import weasyprint"], capture_output=True, text=True, check=False)
    if probe.returncode:
        reason = (probe.stderr.strip().splitlines() or ["no reason given"])[-1].removeprefix("OSError: ")
        raise ConfigError(
            f"optobot: catalogues can't be rendered: WeasyPrint could not load Pango ({reason[:120]}); "
            f"install it, on Debian/Ubuntu: apt-get install {PANGO_PACKAGES}"
        )


def _warm_worker(catalog_dir: Path, data_dir: Path | None) -> None:
    """Pool initializer: load the catalogue and render a one-product PDF, so imports,
    fonts and templates are ready before the first real render."""
    try:
        render_pdf(CatalogRequest(limit=1), catalog_dir, data_dir)
    except Exception:  # a broken catalogue must not break the pool; renders report it
        log.exception("catalogue worker warm-up failed")


def _write(target: Path, data: bytes) -> None:
    """Write ``target`` atomically (temp file + ``os.replace``)."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".pdf.tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise


def _body_to_file(request: CatalogRequest, catalog_dir: Path, data_dir: Path | None, target: Path) -> None:
    """Worker job: the body of ``request`` into ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _write(target, render_body(request, catalog_dir, data_dir))


def _compose_to_file(request: CatalogRequest, catalog_dir: Path, data_dir: Path | None, body: Path, target: Path) -> None:
    """Worker job: the buyer's cover in front of the rendered ``body``, into ``target``."""
    _write(target, compose(render_cover(request, catalog_dir, data_dir), body.read_bytes()))


class CatalogRenderer:
    """Renders catalogues in a pool of lean worker processes with an on-disk cache.

    Concurrent requests for the same file share one render. ``rendered`` counts the buyers'
    catalogues this instance composed (cache misses), ``bodies`` the bodies it rendered. A
    worker starts when a render finds none idle, or ahead of time on :meth:`warm_up`; one that
    dies (e.g. killed for memory) is replaced and its render retried once.
    """

    def __init__(self, catalog_dir: Path, cache_dir: Path, workers: int = 2, *, data_dir: Path | None = None) -> None:
        require_weasyprint()
        self.catalog_dir = catalog_dir.resolve()
        self.data_dir = data_dir
        self.cache_dir = cache_dir
        self.workers = workers
        self.rendered = 0
        self.bodies = 0
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.pool = WorkerPool(workers, initializer=_warm_worker, initargs=(self.catalog_dir, self.data_dir))
        self._inflight: dict[Path, asyncio.Task[Path]] = {}

    def version(self) -> str:
        """The :func:`fingerprint` of the catalogue in use (a few ms: the folder is listed)."""
        return fingerprint(self.catalog_dir, self.data_dir)

    def path_for(self, request: CatalogRequest, version: str | None = None) -> Path:
        """Where the PDF for ``request`` is (or will be) cached."""
        return self.cache_dir / f"{cache_key(request, self.catalog_dir, version=version or self.version())}.pdf"

    def body_path(self, request: CatalogRequest, version: str | None = None) -> Path:
        """Where the body of ``request``'s catalogue is (or will be) cached, under its catalogue version."""
        version = version or self.version()
        return self.cache_dir / "bodies" / version[:16] / f"{cache_key(request.impersonal, self.catalog_dir, version=version)}.pdf"

    async def _once(self, target: Path, make: Callable[[], Awaitable[None]]) -> Path:
        """``target`` if it exists, else made by ``make()``; made once however many wait for it."""
        if target.exists():
            return target
        task = self._inflight.get(target)
        if task is None:
            async def run() -> Path:
                await make()
                return target
            task = self._inflight[target] = asyncio.get_running_loop().create_task(run())
            task.add_done_callback(lambda _: self._inflight.pop(target, None))
        # shield: one waiter giving up must not cancel the render the others await
        return await asyncio.shield(task)

    async def render(self, request: CatalogRequest) -> Path:
        """The cached PDF for ``request``: the buyer's cover composed with the cached body."""
        version = self.version()  # once per tap: listing the folder takes a few ms
        target = self.path_for(request, version)

        async def make() -> None:
            body = await self.body(request, version=version)
            self.rendered += 1
            await asyncio.wrap_future(self.pool.submit(_compose_to_file, request, self.catalog_dir, self.data_dir, body, target))
        return await self._once(target, make)

    async def body(self, request: CatalogRequest, *, background: bool = False, version: str | None = None) -> Path:
        """The cached body of ``request``'s catalogue, rendered first if needed (``background``: only
        while no other render waits)."""
        target = self.body_path(request, version)
        submit = self.pool.submit_background if background else self.pool.submit

        async def make() -> None:
            self.bodies += 1
            await asyncio.wrap_future(submit(_body_to_file, request.impersonal, self.catalog_dir, self.data_dir, target))
        return await self._once(target, make)

    def catalogue(self) -> Catalogue:
        """The catalogue in use (an imported version under ``data_dir``, else the folder's)."""
        return Store(self.catalog_dir, self.data_dir).current() if self.data_dir else load_catalogue(self.catalog_dir)

    async def prerender(self, stop: asyncio.Event, languages: tuple[str, ...] = texts.LANGUAGES,
                        per_category: int | None = None, *, every: float = PRERENDER_CHECK_S) -> None:
        """Render every variant's body of the catalogue version in use one after another, in the background (only
        while no buyer's render waits), until ``stop``; again after a new version (an import or an edit, looked for
        every ``every`` seconds). Bodies of other versions are deleted. ``per_category`` as the buyers' requests
        carry it (``CATALOG_MAX_PER_CATEGORY``)."""
        done: str | None = None
        while not stop.is_set():
            version = await asyncio.to_thread(self.version)
            if version != done:
                done = version if await self._prerender(version, languages, per_category, stop) else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    async def _prerender(self, version: str, languages: tuple[str, ...], per_category: int | None,
                         stop: asyncio.Event) -> bool:
        """One pass over the variants of ``version``; False when stopped or the version changed under way."""
        current = self.body_path(CatalogRequest(), version).parent
        for old in current.parent.glob("*"):
            if old != current:
                shutil.rmtree(old, ignore_errors=True)
        try:
            catalogue = await asyncio.to_thread(self.catalogue)
            for request in variants(catalogue, languages, per_category):
                if stop.is_set() or await asyncio.to_thread(self.version) != version:
                    return False
                await self.body(request, background=True, version=version)
        except Exception:  # a broken catalogue: the buyers' renders report it; tried again once it changes
            log.exception("catalogue body prerender failed")
        return True

    async def warm_up(self, count: int | None = None) -> None:
        """Start ``count`` workers (default: all) now; each loads the catalogue and draws a tiny PDF."""
        if count != 0:
            await asyncio.to_thread(self.pool.start, count)

    def close(self) -> None:
        """Stop the workers, waiting for them to exit (call once, at shutdown)."""
        self.pool.shutdown(wait=True, cancel_futures=True)
