"""The buyer's personalised PDF catalogue: HTML from a jinja2 template, PDF by WeasyPrint.

:func:`render_pdf` is synchronous and CPU-bound; :class:`CatalogRenderer` runs it in a
pool of lean worker processes (:mod:`bot.workers`), caches each PDF under
``cache_dir/<cache_key>.pdf`` and never renders on the event loop thread. WeasyPrint (and
the Pango it loads) is imported only where a PDF is drawn, so commands that draw none start
without it. The workers import this module: it imports no aiogram, SQLAlchemy or app code.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

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


def _html(request: CatalogRequest, bundle: _Bundle) -> str:
    """The catalogue as HTML (every buyer value escaped by jinja2's autoescape)."""
    tx = _translator(request.language)
    separator = tx("thousands_separator")

    def money(amount: int) -> str:
        return tx("price", amount=f"{amount:,}".replace(",", separator))

    def loc(value: Any) -> Any:
        """A company.yaml value in the request's language (``{ru: …, en: …}``)."""
        return value.get(request.language, value.get("ru")) if isinstance(value, dict) else value

    sections = _sections(request, bundle.products)
    return bundle.template.render(
        request=request, lang=request.language, tx=tx, money=money, loc=loc,
        sections=sections, company=bundle.company, tiers=TIERS,
        discounts=_discounts(bundle.products),
        product_count=sum(len(s["products"]) for s in sections),
    )


def render_pdf(request: CatalogRequest, catalog_dir: Path) -> bytes:
    """Render the buyer's catalogue to A4 PDF bytes (synchronous; run it in a worker)."""
    from weasyprint import HTML

    catalog_dir = catalog_dir.resolve()
    bundle = _bundle(catalog_dir, fingerprint(catalog_dir))
    document = HTML(string=_html(request, bundle), base_url=catalog_dir.as_uri() + "/",
                    url_fetcher=bundle.fetcher)
    return document.write_pdf(stylesheets=[bundle.stylesheet], font_config=bundle.fonts)


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


def _render_to_file(request: CatalogRequest, catalog_dir: Path, target: Path) -> None:
    """Worker job: render and write ``target`` atomically (temp file + ``os.replace``)."""
    pdf = render_pdf(request, catalog_dir)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".pdf.tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pdf)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise


class CatalogRenderer:
    """Renders catalogues in a pool of lean worker processes with an on-disk cache.

    Concurrent requests for the same cache key share one render. ``rendered`` counts
    the renders this instance started (cache misses). A worker starts when a render finds
    none idle, or ahead of time on :meth:`warm_up`; one that dies (e.g. killed for memory) is
    replaced and its render retried once.
    """

    def __init__(self, catalog_dir: Path, cache_dir: Path, workers: int = 2) -> None:
        require_weasyprint()
        self.catalog_dir = catalog_dir.resolve()
        self.cache_dir = cache_dir
        self.workers = workers
        self.rendered = 0
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.pool = WorkerPool(workers, initializer=_warm_worker, initargs=(self.catalog_dir,))
        self._inflight: dict[str, asyncio.Task[Path]] = {}

    def path_for(self, request: CatalogRequest) -> Path:
        """Where the PDF for ``request`` is (or will be) cached."""
        return self.cache_dir / f"{cache_key(request, self.catalog_dir)}.pdf"

    async def render(self, request: CatalogRequest) -> Path:
        """The cached PDF for ``request``, rendering it in the pool if needed."""
        target = self.path_for(request)
        if target.exists():
            return target
        task = self._inflight.get(target.name)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._render(request, target))
            self._inflight[target.name] = task
            task.add_done_callback(lambda _: self._inflight.pop(target.name, None))
        # shield: one waiter giving up must not cancel the render the others await
        return await asyncio.shield(task)

    async def _render(self, request: CatalogRequest, target: Path) -> Path:
        self.rendered += 1
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.pool, _render_to_file, request, self.catalog_dir, target)
        return target

    async def warm_up(self, count: int | None = None) -> None:
        """Start ``count`` workers (default: all) now; each loads the catalogue and draws a tiny PDF."""
        if count != 0:
            await asyncio.to_thread(self.pool.start, count)

    def close(self) -> None:
        """Stop the workers, waiting for them to exit (call once, at shutdown)."""
        self.pool.shutdown(wait=True, cancel_futures=True)
