"""The dispatcher's last router: a button press no feature took (an admin's button pressed by someone else, a button
of a message whose step is over) is answered at once with a short alert, so the presser's Telegram stops waiting."""
from __future__ import annotations

from aiogram import Router
from aiogram.types import CallbackQuery

from bot.config import Settings
from bot.texts import normalise_language, t


async def not_taken(query: CallbackQuery, settings: Settings) -> None:
    lang = normalise_language(query.from_user.language_code, settings.default_language)
    await query.answer(t(lang, "fallback.not_taken"), show_alert=True)


def create_router() -> Router:
    router = Router(name="fallback")
    router.callback_query.register(not_taken)
    return router
