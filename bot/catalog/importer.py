"""Import a feed or price list as a new version of the catalogue, all or nothing, with a report.

The new version replaces the working catalogue only when it is whole: every accepted product valid, the quiz mapping
still pointing at existing categories, and not suspicious (at most :data:`MAX_VANISHED` of the products gone). Anything
else leaves the working catalogue as it was and says why.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import ValidationError

from bot.catalog import sources
from bot.catalog.model import CatalogError, Catalogue, Product, describe
from bot.catalog.pictures import PictureError, Pictures, read_capped
from bot.catalog.store import Store
from bot.texts import plural, raw

IMPORT_MAPPING = "import.yaml"
#: A new version that loses more than this share of the products is refused as suspicious.
MAX_VANISHED = 0.8
MAX_FEED_BYTES = 200 * 1024 * 1024
#: Pictures fetched at once.
PARALLEL = 8
APPLIED, DRY_RUN, REFUSED, PENDING = "applied", "dry-run", "refused", "pending"


@dataclass
class Report:
    """What an import found and did; :meth:`text` is what the admin and the command line show."""

    source: str
    status: str = REFUSED
    reason: str = ""
    read: int = 0
    per_category: list[tuple[str, int]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    pictures: int = 0
    picture_problems: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    repriced: list[str] = field(default_factory=list)
    version: str | None = None

    @property
    def accepted(self) -> int:
        return sum(count for _, count in self.per_category)

    def text(self, lang: str, limit: int = 20) -> str:
        """The report as plain lines in ``lang`` (long lists cut at ``limit`` items)."""
        def tx(key: str, **values: Any) -> str:
            return str(raw(lang, f"catalog_import.{key}")).format(**values)

        def listed(items: list[str]) -> str:
            more = tx("more", count=len(items) - limit) if len(items) > limit else ""
            return ", ".join(items[:limit]) + more

        lines = [tx(self.status, source=self.source, version=self.version or "", reason=self.reason),
                 tx("read", read=self.read, accepted=self.accepted)]
        lines += [f"• {name}: {plural(lang, 'catalog_import.products', count)}" for name, count in self.per_category]
        if self.rejected:
            lines.append(tx("rejected", count=len(self.rejected)))
            lines += [f"  – {line}" for line in self.rejected[:limit]]
            if len(self.rejected) > limit:
                lines.append("  " + tx("more", count=len(self.rejected) - limit))
        lines.append(tx("pictures", count=self.pictures, failed=len(self.picture_problems)))
        lines += [f"  – {line}" for line in self.picture_problems[:limit]]
        if self.added or self.removed or self.repriced:
            lines.append(tx("changes", added=len(self.added), removed=len(self.removed), repriced=len(self.repriced)))
            for key, items in (("added_list", self.added), ("removed_list", self.removed), ("repriced_list", self.repriced)):
                if items:
                    lines.append("  " + tx(key, items=listed(items)))
        return "\n".join(lines)


def read_mapping(catalog_dir: Path, path: Path | None) -> dict[str, Any]:
    """The import mapping: ``path``, else ``import.yaml`` of the catalogue folder, else none (a YML feed needs none)."""
    target = path or catalog_dir / IMPORT_MAPPING
    if not target.is_file():
        if path is not None:
            raise CatalogError(f"{path}: no such file")
        return {}
    try:
        data = yaml.safe_load(target.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise CatalogError(f"{target}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise CatalogError(f"{target}: expected a mapping at the top")
    return data


async def run_import(store: Store, name: str, data: bytes, *, mapping: dict[str, Any], base: Path | None,
                     client: httpx.AsyncClient, dry_run: bool = False, pending: bool = False, force: bool = False) -> Report:
    """Import ``data`` (a file called ``name``; relative picture paths start in ``base``). Saves and switches to the new
    version unless ``dry_run`` (only the report) or ``pending`` (saved; :meth:`Store.activate` applies it later)."""
    report = Report(source=name)
    try:
        parsed = await asyncio.to_thread(sources.read, name, data, mapping)
    except sources.SourceError as error:
        report.reason = str(error)
        return report
    report.read, report.rejected = parsed.read, list(parsed.problems)
    settings = {k: v for k, v in store.base().items() if k not in ("categories", "products")}
    if parsed.currency and "currency" not in settings:
        settings["currency"] = parsed.currency
    categories = _categories(parsed.categories, report)
    try:
        probe = Catalogue.model_validate({**settings, "categories": categories})
    except ValidationError as error:
        report.reason = f"catalog.yaml: {describe(error)}"
        return report
    products = _valid(parsed.products, probe, report)
    pictures = Pictures(store.root, base)
    await _fetch_pictures(products, pictures, client, report)
    report.pictures = pictures.fetched + pictures.reused
    if not products:
        report.reason = report.reason or "no product could be imported"
        return report
    try:
        catalogue = store.assemble({**settings, "categories": categories, "products": products})
    except CatalogError as error:
        report.reason = str(error)
        return report
    report.version = catalogue.version
    report.per_category = [(c.name, n) for c in catalogue.categories if (n := len(catalogue.in_category(c.id)))]
    before = _compare(store, catalogue, report)
    if len(report.removed) > MAX_VANISHED * before and not force:
        report.reason = (f"suspicious: {len(report.removed)} of {before} products would vanish; check the file, "
                         "or import it with --force")
        return report
    if dry_run:
        report.status = DRY_RUN
        return report
    store.save(catalogue)
    if pending:
        report.status = PENDING
        return report
    store.activate(catalogue.version)
    report.status = APPLIED
    return report


def _categories(found: list[dict[str, Any]], report: Report) -> list[dict[str, Any]]:
    """The source's categories, each once, a parent that isn't there dropped (and reported)."""
    seen: dict[str, dict[str, Any]] = {}
    for category in found:
        if not category["id"] or not category["name"]:
            report.rejected.append(f"category {category['id'] or category['name'] or '?'}: needs an id and a name")
        elif category["id"] not in seen:
            seen[category["id"]] = {k: v for k, v in category.items() if v is not None}
    for category in seen.values():
        if category.get("parent") and category["parent"] not in seen:
            report.rejected.append(f"category {category['id']}: unknown parent {category.pop('parent')!r}")
    return list(seen.values())


def _valid(found: list[dict[str, Any]], probe: Catalogue, report: Report) -> list[dict[str, Any]]:
    """The products that are whole (each bad one reported by offer or row and field); SKUs taken once."""
    products, skus = [], set()
    for item in found:
        label = item.pop("where")
        try:
            product = Product.model_validate({**item, "pictures": ()})  # references until fetched
        except ValidationError as error:
            report.rejected.append(f"{label}: {describe(error)}")
            continue
        if problems := probe.product_problems(product):
            report.rejected.append(f"{label}: {'; '.join(problems)}")
        elif product.sku in skus:
            report.rejected.append(f"{label}: the SKU appears twice (the first is kept)")
        else:
            skus.add(product.sku)
            products.append(item)
    return products


async def _fetch_pictures(products: list[dict[str, Any]], pictures: Pictures, client: httpx.AsyncClient, report: Report) -> None:
    """Replace each product's picture references by stored pictures; one that fails is reported and left out."""
    gate = asyncio.Semaphore(PARALLEL)

    async def one(product: dict[str, Any]) -> None:
        stored = []
        for reference in product.get("pictures") or ():
            async with gate:
                try:
                    stored.append(await pictures.get(client, reference))
                except PictureError as error:
                    report.picture_problems.append(f"{product['sku']}: {error}")
        product["pictures"] = list(dict.fromkeys(stored))
        if not stored:
            report.picture_problems.append(f"{product['sku']}: no picture (a placeholder is shown)")

    await asyncio.gather(*(one(product) for product in products))


def _compare(store: Store, new: Catalogue, report: Report) -> int:
    """Products added, removed and repriced since the catalogue in use; how many it has."""
    try:
        old = store.current()
    except CatalogError:
        return 0
    before = {p.sku: p.prices for p in old.products}
    after = {p.sku: p.prices for p in new.products}
    report.added = sorted(set(after) - set(before))
    report.removed = sorted(set(before) - set(after))
    report.repriced = sorted(sku for sku in set(before) & set(after) if _prices(before[sku]) != _prices(after[sku]))
    return len(before)


def _prices(prices: dict[str, Decimal]) -> dict[str, Decimal]:
    return {tier: Decimal(value).normalize() for tier, value in prices.items()}


@dataclass(frozen=True)
class Fetched:
    """A feed fetched by URL: its bytes (``None``: unchanged since ``etag``/``last_modified``) and validators."""

    data: bytes | None
    etag: str | None
    last_modified: str | None


async def fetch_source(client: httpx.AsyncClient, url: str, etag: str | None = None, last_modified: str | None = None) -> Fetched:
    """GET a feed (http/https only, at most :data:`MAX_FEED_BYTES`), conditionally when validators are known."""
    if not url.lower().startswith(("http://", "https://")):
        raise CatalogError(f"{url[:120]}: only http and https URLs")
    headers = {k: v for k, v in (("If-None-Match", etag), ("If-Modified-Since", last_modified)) if v}
    try:
        async with client.stream("GET", url, headers=headers, timeout=httpx.Timeout(60.0, connect=10.0),
                                 follow_redirects=True) as response:
            if response.status_code == 304:
                return Fetched(None, etag, last_modified)
            if response.status_code != 200:
                raise CatalogError(f"{url[:120]}: HTTP {response.status_code}")
            body = await read_capped(response, MAX_FEED_BYTES, url, CatalogError)
            return Fetched(body, response.headers.get("etag"), response.headers.get("last-modified"))
    except httpx.HTTPError as error:
        raise CatalogError(f"{url[:120]}: {type(error).__name__}: {error}") from None
