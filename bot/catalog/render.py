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
from bot.catalog.products import CATEGORIES, TIERS, Product, load_company, load_products
from bot.workers import WorkerPool

if TYPE_CHECKING:
    from weasyprint import CSS
    from weasyprint.text.fonts import FontConfiguration

    from bot.catalog.fetcher import SafeFetcher

log = logging.getLogger(__name__)

TEMPLATE = "catalog.html.j2"
STYLESHEET = "catalog.css"
#: Files outside the catalogue folder whose edits change the PDF.
_CODE_FILES = (*sorted(Path(__file__).parent.glob("*.py")),
               *(texts.TEXTS_DIR / f"catalog.{lang}.yaml" for lang in texts.LANGUAGES))


@dataclass(frozen=True)
class CatalogRequest:
    """What one buyer's catalogue depends on (the quiz answers and the contact).

    Missing texts may be ``None`` (stored as ``""``); ``categories`` are stored
    deduplicated in catalogue order; ``volume`` is a tier key or ``None`` (all tiers
    shown); ``limit`` caps the number of products.
    """

    name: str = ""
    company: str = ""
    city: str = ""
    categories: tuple[str, ...] = ()
    volume: str | None = None
    language: str = "ru"
    limit: int | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        unknown = set(self.categories) - set(CATEGORIES)
        if unknown:
            raise ValueError(f"unknown categories {sorted(unknown)}")
        if self.volume is not None and self.volume not in TIERS:
            raise ValueError(f"unknown volume tier {self.volume!r}")
        if self.language not in texts.LANGUAGES:
            raise ValueError(f"unsupported language {self.language!r}")
        if self.limit is not None and self.limit < 1:
            raise ValueError("limit must be positive")
        for name in ("name", "company", "city"):
            object.__setattr__(self, name, " ".join(str(getattr(self, name) or "").split()))
        ordered = tuple(c for c in CATEGORIES if c in self.categories)
        object.__setattr__(self, "categories", ordered)

    @property
    def impersonal(self) -> CatalogRequest:
        """The request without the buyer's name, company and city: what the body depends on."""
        return replace(self, name="", company="", city="")


def variants(languages: tuple[str, ...] = texts.LANGUAGES) -> list[CatalogRequest]:
    """Every body a buyer can get: category sets (the likeliest, a single category, first) × tiers
    (and no tier) × ``languages``."""
    sets = [combo for size in (1, 2, 3, 4, 5, 0) for combo in itertools.combinations(CATEGORIES, size)]
    return [CatalogRequest(categories=combo, volume=tier, language=language)
            for language in languages for combo in sets for tier in (*TIERS, None)]


def fingerprint(catalog_dir: Path) -> str:
    """A digest of the names, sizes and mtimes of every file the PDF is made from."""
    files = sorted(p for p in catalog_dir.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for name, path in (*((p.relative_to(catalog_dir), p) for p in files),
                       *((p.name, p) for p in _CODE_FILES)):
        stat = path.stat()
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cache_key(request: CatalogRequest, catalog_dir: Path) -> str:
    """sha256 hex of the request and the catalogue folder's :func:`fingerprint`."""
    payload = json.dumps(
        [request.name, request.company, request.city, request.categories,
         request.volume, request.language, request.limit, fingerprint(catalog_dir)],
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class _Bundle:
    """Everything parsed once per process for one version of the catalogue folder."""

    products: tuple[Product, ...]
    company: dict[str, Any]
    template: jinja2.Template
    stylesheet: CSS
    fonts: FontConfiguration
    fetcher: SafeFetcher


@lru_cache(maxsize=2)
def _bundle(catalog_dir: Path, version: str) -> _Bundle:
    """Load the catalogue folder; ``version`` (its fingerprint) keys the cache."""
    from weasyprint import CSS
    from weasyprint.text.fonts import FontConfiguration

    from bot.catalog.fetcher import SafeFetcher

    texts.catalogue.cache_clear()  # the catalogue's texts may have changed too
    fetcher = SafeFetcher(catalog_dir)
    fonts = FontConfiguration()
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(catalog_dir), autoescape=True,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    return _Bundle(
        products=load_products(catalog_dir / "products.yaml"),
        company=load_company(catalog_dir / "company.yaml"),
        template=env.get_template(TEMPLATE),
        stylesheet=CSS(filename=str(catalog_dir / STYLESHEET), url_fetcher=fetcher,
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


def _sections(request: CatalogRequest, products: tuple[Product, ...]) -> list[dict[str, Any]]:
    """Product groups by category: the buyer's categories first, then the others."""
    chosen = request.categories
    order = [*chosen, *(c for c in CATEGORIES if c not in chosen)]
    left = request.limit if request.limit is not None else len(products)
    sections = []
    for category in order:
        items = [p for p in products if p.category == category][:left]
        left -= len(items)
        if items:
            sections.append({"category": category, "products": items,
                             "other": bool(chosen) and category not in chosen})
    return sections


def _discounts(products: tuple[Product, ...]) -> dict[str, int]:
    """Each tier's average discount off the first tier's prices, in whole percent."""
    base = sum(p.prices[TIERS[0]] for p in products) or 1
    return {tier: round(100 - 100 * sum(p.prices[tier] for p in products) / base)
            for tier in TIERS}


def _html(request: CatalogRequest, bundle: _Bundle, cover_only: bool = False) -> str:
    """The catalogue (or only its cover) as HTML (every buyer value escaped by jinja2's autoescape)."""
    tx = _translator(request.language)
    separator = tx("thousands_separator")

    def money(amount: int) -> str:
        return tx("price", amount=f"{amount:,}".replace(",", separator))

    def loc(value: Any) -> Any:
        """A company.yaml value in the request's language (``{ru: …, en: …}``)."""
        return value.get(request.language, value.get("ru")) if isinstance(value, dict) else value

    sections = _sections(request, bundle.products)
    return bundle.template.render(
        request=request, cover_only=cover_only, lang=request.language, tx=tx, money=money, loc=loc,
        count=lambda n: texts.plural(request.language, "catalog.products_count", n),
        sections=sections, company=bundle.company, tiers=TIERS,
        discounts=_discounts(bundle.products),
        product_count=sum(len(s["products"]) for s in sections),
    )


def _draw(request: CatalogRequest, catalog_dir: Path, cover_only: bool) -> bytes:
    from weasyprint import HTML

    catalog_dir = catalog_dir.resolve()
    bundle = _bundle(catalog_dir, fingerprint(catalog_dir))
    document = HTML(string=_html(request, bundle, cover_only), base_url=catalog_dir.as_uri() + "/",
                    url_fetcher=bundle.fetcher)
    return document.write_pdf(stylesheets=[bundle.stylesheet], font_config=bundle.fonts)


def render_body(request: CatalogRequest, catalog_dir: Path) -> bytes:
    """The whole catalogue for ``request`` without the buyer's personal details: the same PDF for every
    buyer of its categories, tier and language (its first page is an impersonal cover)."""
    return _draw(request.impersonal, catalog_dir, cover_only=False)


def render_cover(request: CatalogRequest, catalog_dir: Path) -> bytes:
    """The buyer's one-page cover (their name, company and city, escaped)."""
    return _draw(request, catalog_dir, cover_only=True)


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


def render_pdf(request: CatalogRequest, catalog_dir: Path) -> bytes:
    """The buyer's whole catalogue as A4 PDF bytes, cover and body drawn here (synchronous)."""
    return compose(render_cover(request, catalog_dir), render_body(request, catalog_dir))


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


def _warm_worker(catalog_dir: Path) -> None:
    """Pool initializer: load the catalogue and render a one-product PDF, so imports,
    fonts and templates are ready before the first real render."""
    try:
        render_pdf(CatalogRequest(limit=1), catalog_dir)
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


def _body_to_file(request: CatalogRequest, catalog_dir: Path, target: Path) -> None:
    """Worker job: the body of ``request`` into ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _write(target, render_body(request, catalog_dir))


def _compose_to_file(request: CatalogRequest, catalog_dir: Path, body: Path, target: Path) -> None:
    """Worker job: the buyer's cover in front of the rendered ``body``, into ``target``."""
    _write(target, compose(render_cover(request, catalog_dir), body.read_bytes()))


class CatalogRenderer:
    """Renders catalogues in a pool of lean worker processes with an on-disk cache.

    Concurrent requests for the same file share one render. ``rendered`` counts the buyers'
    catalogues this instance composed (cache misses), ``bodies`` the bodies it rendered. A
    worker starts when a render finds none idle, or ahead of time on :meth:`warm_up`; one that
    dies (e.g. killed for memory) is replaced and its render retried once.
    """

    def __init__(self, catalog_dir: Path, cache_dir: Path, workers: int = 2) -> None:
        require_weasyprint()
        self.catalog_dir = catalog_dir.resolve()
        self.cache_dir = cache_dir
        self.workers = workers
        self.rendered = 0
        self.bodies = 0
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.pool = WorkerPool(workers, initializer=_warm_worker, initargs=(self.catalog_dir,))
        self._inflight: dict[Path, asyncio.Task[Path]] = {}

    def path_for(self, request: CatalogRequest) -> Path:
        """Where the PDF for ``request`` is (or will be) cached."""
        return self.cache_dir / f"{cache_key(request, self.catalog_dir)}.pdf"

    def body_path(self, request: CatalogRequest) -> Path:
        """Where the body of ``request``'s catalogue is (or will be) cached, under its catalogue version."""
        version = fingerprint(self.catalog_dir)[:16]
        return self.cache_dir / "bodies" / version / f"{cache_key(request.impersonal, self.catalog_dir)}.pdf"

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
        target = self.path_for(request)

        async def make() -> None:
            body = await self.body(request)
            self.rendered += 1
            await asyncio.wrap_future(self.pool.submit(_compose_to_file, request, self.catalog_dir, body, target))
        return await self._once(target, make)

    async def body(self, request: CatalogRequest, *, background: bool = False) -> Path:
        """The cached body of ``request``'s catalogue, rendered first if needed (``background``: only
        while no other render waits)."""
        target = self.body_path(request)
        submit = self.pool.submit_background if background else self.pool.submit

        async def make() -> None:
            self.bodies += 1
            await asyncio.wrap_future(submit(_body_to_file, request.impersonal, self.catalog_dir, target))
        return await self._once(target, make)

    async def prerender(self, stop: asyncio.Event, languages: tuple[str, ...] = texts.LANGUAGES) -> None:
        """Render every variant's body of the current catalogue version one after another, in the
        background, until done or ``stop``; bodies of other versions are deleted first."""
        current = self.body_path(CatalogRequest()).parent
        for old in current.parent.glob("*"):
            if old != current:
                shutil.rmtree(old, ignore_errors=True)
        for request in variants(languages):
            if stop.is_set():
                return
            try:
                await self.body(request, background=True)
            except Exception:  # a broken catalogue: the buyers' renders report it
                log.exception("catalogue body prerender failed")
                return

    async def warm_up(self, count: int | None = None) -> None:
        """Start ``count`` workers (default: all) now; each loads the catalogue and draws a tiny PDF."""
        if count != 0:
            await asyncio.to_thread(self.pool.start, count)

    def close(self) -> None:
        """Stop the workers, waiting for them to exit (call once, at shutdown)."""
        self.pool.shutdown(wait=True, cancel_futures=True)
