"""What is still to be sent (``/upcoming`` for admins, ``optobot followups list``) and cancelling one of it."""
from __future__ import annotations

from zoneinfo import ZoneInfo

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import Lead
from bot.followups import store
from bot.followups.models import REMINDER, STAGE, FollowUp
from bot.texts import escape, raw, t

LIMIT = 30


def what(row: FollowUp, lang: str) -> str:
    """«этап «Тестовая партия отправлена»», «опрос после тестовой партии», «напоминание менеджера: …» (plain text)."""
    if row.kind == STAGE:
        return str(raw(lang, "followups.topic.stage")).format(stage=raw(lang, f"followups.stages.{row.stage}"))
    label = str(raw(lang, f"followups.upcoming.kinds.{row.kind}"))
    return f"{label}: {row.data.get('text', '')}" if row.kind == REMINDER else label


def line(row: FollowUp, lead: Lead, lang: str, tz: ZoneInfo) -> str:
    """One upcoming follow-up as plain text: ``#12 · 02.12 10:00 · Анна Петрова · опрос после тестовой партии``."""
    due = row.due_at.astimezone(tz).strftime("%d.%m %H:%M")
    return f"#{row.id} · {due} · {lead.display_name} · {what(row, lang)}" + (f" ({row.reason})" if row.reason else "")


async def upcoming(db: async_sessionmaker[AsyncSession]) -> list[tuple[FollowUp, Lead]]:
    async with db() as session:
        return list(await store.upcoming(session, LIMIT))


async def cancel(db: async_sessionmaker[AsyncSession], followup_id: int, by: str) -> bool:
    """Cancel a follow-up not sent yet; False if there is none."""
    async with db.begin() as session:
        return await store.cancel(session, followup_id, f"cancelled by {by}"[:256])


class UpcomingCb(CallbackData, prefix="fuc"):
    followup: int


async def overview(db: async_sessionmaker[AsyncSession], lang: str, tz: ZoneInfo) -> tuple[str, InlineKeyboardMarkup | None]:
    """``/upcoming``: the list (HTML) and a cancel button per follow-up."""
    rows = await upcoming(db)
    if not rows:
        return t(lang, "followups.upcoming.empty"), None
    text = "\n".join([t(lang, "followups.upcoming.title", count=len(rows)), *(escape(line(row, lead, lang, tz)) for row, lead in rows)])
    buttons = [InlineKeyboardButton(text=t(lang, "followups.upcoming.cancel", id=row.id), callback_data=UpcomingCb(followup=row.id).pack())
               for row, _ in rows]
    return text, InlineKeyboardMarkup(inline_keyboard=[buttons[i:i + 5] for i in range(0, len(buttons), 5)])
