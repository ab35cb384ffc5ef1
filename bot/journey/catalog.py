"""Sending the personal catalogue: render once per personalisation key, then re-send by ``file_id``."""
from __future__ import annotations

import structlog
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import FSInputFile
from aiogram.types import Message as TgMessage
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.catalog.render import CatalogRenderer, CatalogRequest
from bot.db import renders
from bot.db.models import Lead
from bot.journey.quiz import Quiz
from bot.messenger import Messenger
from bot.texts import t

log = structlog.get_logger(__name__)


def catalog_request(lead: Lead) -> CatalogRequest:
    """The personalisation of ``lead``'s catalogue (its quiz answers and contact)."""
    interests = lead.interests
    return CatalogRequest(
        name=" ".join(part for part in (lead.first_name, lead.last_name) if part),
        company=lead.company or "",
        city=interests.get("city") or "",
        categories=tuple(interests.get("category") or ()),
        volume=interests.get("volume"),
        language=lead.language,
    )


class CatalogService:
    def __init__(self, db: async_sessionmaker[AsyncSession], renderer: CatalogRenderer, messenger: Messenger, quiz: Quiz) -> None:
        self.db = db
        self.renderer = renderer
        self.messenger = messenger
        self.quiz = quiz

    def caption(self, lead: Lead) -> str:
        lang = lead.language
        categories = self.quiz.labels_of("category", lead.interests, lang)
        volume = self.quiz.labels_of("volume", lead.interests, lang)
        if categories and volume:
            return t(lang, "journey.catalog_caption", categories=", ".join(categories), volume=volume[0])
        return t(lang, "journey.catalog_caption_all")

    async def send(self, lead: Lead) -> TgMessage:
        """Send ``lead`` their catalogue: by ``file_id`` if this personalisation was uploaded before."""
        request = catalog_request(lead)
        path = self.renderer.path_for(request)
        key = path.stem
        async with self.db() as session:
            file_id = await renders.file_id(session, key)
        if file_id:
            try:
                return await self.messenger.send_document(lead, file_id, caption=self.caption(lead))
            except TelegramBadRequest as exc:  # file_id no longer valid (another bot token): upload again
                log.warning("catalog.file_id_rejected", key=key, error=exc.message)
        path = await self.renderer.render(request)
        document = FSInputFile(path, filename=t(lead.language, "journey.catalog_filename"))
        sent = await self.messenger.send_document(lead, document, caption=self.caption(lead))
        async with self.db.begin() as session:
            await renders.remember(session, key, str(path), sent.document.file_id if sent.document else None)
        return sent
