"""Queries of the ``catalog_renders`` table."""
from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import CatalogRender


async def file_id(session: AsyncSession, key: str) -> str | None:
    render = await session.get(CatalogRender, key)
    return render.file_id if render else None


async def remember(session: AsyncSession, key: str, path: str, file_id: str | None) -> None:
    """Record (or update) the render for ``key`` and its Telegram ``file_id``."""
    render = await session.get(CatalogRender, key)
    if render is None:
        session.add(CatalogRender(key=key, path=path, file_id=file_id))
    else:
        render.path, render.file_id = path, file_id or render.file_id
