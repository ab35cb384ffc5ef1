"""The catalogue as the other features use it (:class:`bot.ports.Catalog`): personal PDFs and price ranges."""
from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from weakref import WeakValueDictionary

import structlog
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import FSInputFile, Message
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.catalog.model import Catalogue, load_catalogue
from bot.catalog.render import CatalogRenderer, CatalogRequest, fingerprint
from bot.db import renders
from bot.messenger import unreachable_reason
from bot.ports import Buyer, PriceRange, SendDocument
from bot.texts import t

log = structlog.get_logger(__name__)


def catalog_request(buyer: Buyer, catalogue: Catalogue) -> CatalogRequest:
    """The personalisation of ``buyer``'s catalogue: their contact, and their quiz answers mapped to the catalogue's
    categories and tier (``mapping.yaml``)."""
    interests = buyer.interests
    return CatalogRequest(
        name=" ".join(part for part in (buyer.first_name, buyer.last_name) if part),
        company=buyer.company or "",
        city=interests.get("city") or "",
        categories=catalogue.buyer_categories(interests),
        volume=catalogue.buyer_tier(interests),
        language=buyer.language,
    )


class Catalog:
    def __init__(self, db: async_sessionmaker[AsyncSession], renderer: CatalogRenderer, catalog_dir: Path) -> None:
        self.db = db
        self.renderer = renderer
        self.catalog_dir = catalog_dir
        self._locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()
        self._loaded: tuple[str, Catalogue] | None = None

    def catalogue(self) -> Catalogue:
        """The supplier's catalogue, read again when a file of its folder changed."""
        stamp = fingerprint(self.catalog_dir)
        if self._loaded is None or self._loaded[0] != stamp:
            self._loaded = (stamp, load_catalogue(self.catalog_dir))
        return self._loaded[1]

    async def send(self, buyer: Buyer, send: SendDocument) -> Message:
        """Send ``buyer``'s catalogue through ``send``: by ``file_id`` if this personalisation was uploaded
        before (once per personalisation, even when several buyers share it), else rendered and uploaded."""
        request = catalog_request(buyer, self.catalogue())
        key = self.renderer.path_for(request).stem
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
            path = await self.renderer.render(request)
            message = await send(FSInputFile(path, filename=t(buyer.language, "journey.catalog_filename")))
            async with self.db.begin() as session:
                await renders.remember(session, key, str(path), message.document.file_id if message.document else None)
            return message

    def prices(self, interests: Mapping[str, Any], language: str) -> tuple[str, list[PriceRange]]:
        """The name of the buyer's volume tier (the smallest when unknown) and, per catalogue category they want (all when
        unknown), in catalogue order, the number of models and their price range at that tier."""
        catalogue = self.catalogue()
        tier = catalogue.tier(catalogue.buyer_tier(interests) or catalogue.tiers[0].id)
        wanted = catalogue.buyer_categories(interests) or [c.id for c in catalogue.categories]
        ranges = []
        for category in catalogue.categories:
            prices = [product.prices[tier.id] for product in catalogue.in_category(category.id)]
            if category.id in wanted and prices:
                ranges.append(PriceRange(category.label(language), len(prices), catalogue.money(min(prices), language),
                                         catalogue.money(max(prices), language)))
        return tier.label(language), ranges
