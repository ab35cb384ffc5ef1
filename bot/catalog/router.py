"""An admin (ADMIN_IDS) sends an ``.xlsx``, ``.csv`` or ``.xml`` file to the bot in a private chat: it is checked as a new
version of the catalogue and the report comes back with «Применить» / «Отменить»."""
from __future__ import annotations

import io
from pathlib import PurePosixPath

from aiogram import F, Router
from aiogram.enums import ChatType
from aiogram.filters import Filter
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.state import default_state
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.catalog.importer import PENDING
from bot.catalog.imports import Imports
from bot.config import Settings
from bot.texts import t

SUFFIXES = (".xlsx", ".csv", ".xml", ".yml")
#: What the Bot API lets a bot download.
MAX_UPLOAD = 20 * 1024 * 1024
#: The longest report Telegram takes in one message.
MAX_TEXT = 4000


class ImportCb(CallbackData, prefix="ci"):
    op: str  # apply | cancel
    id: int


class AdminUpload(Filter):
    """A price list or feed from an admin in a private chat."""

    async def __call__(self, message: Message, settings: Settings) -> bool:
        document = message.document
        return (message.from_user is not None and message.from_user.id in settings.admin_ids and message.chat.type == ChatType.PRIVATE
                and document is not None and PurePosixPath(document.file_name or "").suffix.lower() in SUFFIXES)


class AdminButton(Filter):
    async def __call__(self, query: CallbackQuery, settings: Settings) -> bool:
        return query.from_user.id in settings.admin_ids


async def upload(message: Message, imports: Imports, settings: Settings) -> None:
    lang, document = settings.default_language, message.document
    assert document is not None and message.bot is not None
    if (document.file_size or 0) > MAX_UPLOAD:
        await message.answer(t(lang, "catalog_import.too_big", mb=MAX_UPLOAD // 1024 // 1024))
        return
    data = io.BytesIO()
    await message.bot.download(document, destination=data)
    import_id, report = await imports.upload(document.file_name or "upload", data.getvalue())
    markup = None
    if report.status == PENDING:
        markup = InlineKeyboardMarkup(inline_keyboard=[[
            InlineKeyboardButton(text=t(lang, "catalog_import.apply"), callback_data=ImportCb(op="apply", id=import_id).pack()),
            InlineKeyboardButton(text=t(lang, "catalog_import.cancel"), callback_data=ImportCb(op="cancel", id=import_id).pack())]])
    await message.answer(t(lang, "catalog_import.report", text=report.text(lang))[:MAX_TEXT], reply_markup=markup)


async def decide(query: CallbackQuery, callback_data: ImportCb, imports: Imports, settings: Settings) -> None:
    lang = settings.default_language
    if callback_data.op == "apply":
        version = await imports.apply(callback_data.id)
        text = t(lang, "catalog_import.done", version=version) if version else t(lang, "catalog_import.stale")
    else:
        text = t(lang, "catalog_import.cancelled") if await imports.cancel(callback_data.id) else t(lang, "catalog_import.stale")
    await query.answer()
    if isinstance(query.message, Message):
        await query.message.edit_reply_markup(reply_markup=None)
        await query.message.answer(text)


def create_router() -> Router:
    """The admin upload; include it after the broadcast wizard (which takes documents while it asks for content)."""
    router = Router(name="catalog")
    router.message.register(upload, AdminUpload(), default_state)
    router.callback_query.register(decide, ImportCb.filter(F.op.in_({"apply", "cancel"})), AdminButton())
    return router
