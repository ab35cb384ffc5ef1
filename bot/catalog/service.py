"""The catalogue as the other features use it (:class:`bot.ports.Catalog`): personal PDFs and price ranges."""
from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable, Collection, Mapping
from pathlib import Path
from typing import Any
from weakref import WeakValueDictionary

import structlog
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import FSInputFile, Message
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import metrics
from bot.catalog.model import Catalogue
from bot.catalog.pricelist import price_list
from bot.catalog.render import CatalogRenderer, CatalogRequest
from bot.catalog.store import Store, write_atomically
from bot.db import renders
from bot.messenger import unreachable_reason
from bot.ports import Buyer, Offered, PriceRange, SendDocument
from bot.texts import raw, t

log = structlog.get_logger(__name__)

#: Characters a file name sent to Telegram should not hold (path separators, control characters, quotes).
UNSAFE_IN_FILENAMES = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')


def catalog_request(buyer: Buyer, catalogue: Catalogue, per_category: int | None = None) -> CatalogRequest:
    """The personalisation of ``buyer``'s catalogue: their contact, and their quiz answers mapped to the catalogue's
    categories and tier (``mapping.yaml``); at most ``per_category`` products of each category."""
    interests = buyer.interests
    return CatalogRequest(
        name=" ".join(part for part in (buyer.first_name, buyer.last_name) if part),
        company=buyer.company or "",
        city=interests.get("city") or "",
        categories=catalogue.buyer_categories(interests),
        volume=catalogue.buyer_tier(interests),
        language=buyer.language,
        per_category=per_category,
    )


def supplier_name(catalogue: Catalogue, language: str) -> str:
    """The supplier's name from the company file, in ``language``."""
    name = catalogue.company["name"]
    return str(name.get(language, name.get("ru")) if isinstance(name, dict) else name)


def catalog_filename(supplier: str, request: CatalogRequest) -> str:
    """«Каталог ОптЛиния — Анна Петрова.pdf»: the PDF's name in the chat, after the supplier and the buyer (no
    grammatical case needed; characters a file name can't hold replaced)."""
    buyer = request.name or request.company
    key = "journey.catalog_filename" if buyer else "journey.catalog_filename_anonymous"
    name = raw(request.language, key).format(supplier=supplier, buyer=buyer)
    return UNSAFE_IN_FILENAMES.sub("_", name[:-4])[:120].strip() + ".pdf"


class Catalog:
    def __init__(self, db: async_sessionmaker[AsyncSession], renderer: CatalogRenderer, store: Store,
                 per_category: int | None = None) -> None:
        self.db = db
        self.renderer = renderer
        self.store = store
        self.per_category = per_category
        self._locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()

    def catalogue(self) -> Catalogue:
        """The catalogue in use (the folder's, or the version last imported), read again when it changed."""
        return self.store.current()

    async def send(self, buyer: Buyer, send: SendDocument) -> Message:
        """Send ``buyer``'s catalogue through ``send``: by ``file_id`` if this personalisation was uploaded
        before (once per personalisation, even when several buyers share it), else rendered and uploaded."""
        catalogue = self.catalogue()
        request = catalog_request(buyer, catalogue, self.per_category)
        return await self._deliver(self.renderer.path_for(request).stem, lambda: self._render(request),
                                   catalog_filename(supplier_name(catalogue, buyer.language), request), send)

    async def send_price_list(self, buyer: Buyer, send: SendDocument) -> Message:
        """Send ``buyer`` the XLSX price list of the whole assortment at their tier (the first when unknown); one file per
        catalogue version, tier and language, uploaded once."""
        catalogue, lang = self.catalogue(), buyer.language
        tier = catalogue.buyer_tier(buyer.interests) or catalogue.tiers[0].id
        key = hashlib.sha256(f"xlsx\0{catalogue.version}\0{tier}\0{lang}".encode()).hexdigest()

        async def build() -> Path:
            target = self.renderer.cache_dir / f"{key}.xlsx"
            if not target.exists():
                write_atomically(target, await asyncio.to_thread(price_list, catalogue, tier, lang))
            return target

        return await self._deliver(key, build, t(lang, "catalog.price_list.filename", supplier=supplier_name(catalogue, lang)), send)

    async def _deliver(self, key: str, build: Callable[[], Awaitable[Path]], filename: str, send: SendDocument) -> Message:
        """Send the file ``key`` by its ``file_id`` once uploaded, else ``build`` it and upload it (one at a time per key)."""
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        async with lock:
            async with self.db() as session:
                file_id = await renders.file_id(session, key)
            if file_id:
                try:
                    return await send(file_id)
                except TelegramBadRequest as exc:  # file_id no longer valid (another bot token): upload again
                    if unreachable_reason(exc) is not None:
                        raise
                    log.warning("catalog.file_id_rejected", key=key, error=exc.message)
            path = await build()
            message = await send(FSInputFile(path, filename=filename))
            async with self.db.begin() as session:
                await renders.remember(session, key, str(path), message.document.file_id if message.document else None)
            return message

    async def _render(self, request: CatalogRequest) -> Path:
        """The PDF; a render (not a cached file) is timed and counted while it waits or runs (``/metrics``)."""
        if self.renderer.path_for(request).exists():
            return await self.renderer.render(request)
        with metrics.RENDER_QUEUE.track_inprogress(), metrics.CATALOG_RENDER.time():
            return await self.renderer.render(request)

    def prices(self, interests: Mapping[str, Any], language: str) -> tuple[str, list[PriceRange]]:
        """The name of the buyer's volume tier (the smallest when unknown) and, per catalogue category they want (all when
        unknown), in catalogue order, the number of models and their price range at that tier."""
        catalogue = self.catalogue()
        tier = catalogue.tier(catalogue.buyer_tier(interests) or catalogue.tiers[0].id)
        wanted = wanted_categories(catalogue, interests)
        ranges = []
        for category in catalogue.categories:
            prices = [product.prices[tier.id] for product in catalogue.in_category(category.id)]
            if category.id in wanted and prices:
                ranges.append(PriceRange(category.label(language), len(prices), catalogue.money(min(prices), language),
                                         catalogue.money(max(prices), language)))
        return tier.label(language), ranges

    def assortment(self, interests: Mapping[str, Any]) -> list[str]:
        """The SKUs of the categories the buyer wants (all when unknown), as the catalogue is now."""
        catalogue = self.catalogue()
        wanted = set(wanted_categories(catalogue, interests))
        return [product.sku for product in catalogue.products if product.category in wanted]

    def novelties(self, interests: Mapping[str, Any], language: str, known: Collection[str]) -> list[Offered]:
        """The products in stock of the buyer's categories whose SKU is not in ``known``, in catalogue order, at the buyer's
        tier (the smallest when unknown)."""
        catalogue = self.catalogue()
        tier = catalogue.buyer_tier(interests) or catalogue.tiers[0].id
        wanted, known = set(wanted_categories(catalogue, interests)), set(known)
        return [Offered(product.sku, product.title(language),
                        f"{catalogue.money(product.prices[tier], language)} {catalogue.unit_label(product.unit, language, per=True)}")
                for product in catalogue.products if product.category in wanted and product.sku not in known and product.in_stock]


def wanted_categories(catalogue: Catalogue, interests: Mapping[str, Any]) -> list[str]:
    """The categories the buyer's quiz answers map to, or every category when they map to none."""
    return list(catalogue.buyer_categories(interests)) or [c.id for c in catalogue.categories]
