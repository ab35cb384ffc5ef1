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

from bot import metrics
from bot.catalog.products import CATEGORIES, TIERS, load_products
from bot.catalog.render import CatalogRenderer, CatalogRequest
from bot.db import renders
from bot.messenger import unreachable_reason
from bot.ports import Buyer, PriceRange, SendDocument
from bot.texts import t

log = structlog.get_logger(__name__)


def catalog_request(buyer: Buyer) -> CatalogRequest:
    """The personalisation of ``buyer``'s catalogue (their quiz answers and contact)."""
    interests = buyer.interests
    return CatalogRequest(
        name=" ".join(part for part in (buyer.first_name, buyer.last_name) if part),
        company=buyer.company or "",
        city=interests.get("city") or "",
        categories=tuple(interests.get("category") or ()),
        volume=interests.get("volume"),
        language=buyer.language,
    )


class Catalog:
    def __init__(self, db: async_sessionmaker[AsyncSession], renderer: CatalogRenderer, catalog_dir: Path) -> None:
        self.db = db
        self.renderer = renderer
        self.catalog_dir = catalog_dir
        self._locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()

    async def send(self, buyer: Buyer, send: SendDocument) -> Message:
        """Send ``buyer``'s catalogue through ``send``: by ``file_id`` if this personalisation was uploaded
        before (once per personalisation, even when several buyers share it), else rendered and uploaded."""
        request = catalog_request(buyer)
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
            path = await self._render(request)
            message = await send(FSInputFile(path, filename=t(buyer.language, "journey.catalog_filename")))
            async with self.db.begin() as session:
                await renders.remember(session, key, str(path), message.document.file_id if message.document else None)
            return message

    async def _render(self, request: CatalogRequest) -> Path:
        """The PDF; a render (not a cached file) is timed and counted while it waits or runs (``/metrics``)."""
        if self.renderer.path_for(request).exists():
            return await self.renderer.render(request)
        with metrics.RENDER_QUEUE.track_inprogress(), metrics.CATALOG_RENDER.time():
            return await self.renderer.render(request)

    def prices(self, interests: Mapping[str, Any]) -> tuple[str, list[PriceRange]]:
        """The buyer's volume tier (the smallest when unknown) and, per category they want (all when unknown),
        in catalogue order, the number of models and their price range at that tier; read afresh each time."""
        products = load_products(self.catalog_dir / "products.yaml")
        tier = interests.get("volume") if interests.get("volume") in TIERS else TIERS[0]
        wanted = interests.get("category") or CATEGORIES
        ranges = []
        for category in CATEGORIES:
            prices = [product.prices[tier] for product in products if product.category == category]
            if category in wanted and prices:
                ranges.append(PriceRange(category, len(prices), min(prices), max(prices)))
        return tier, ranges
