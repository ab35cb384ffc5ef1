"""``/report [days] [key=value …]`` for admins (ADMIN_IDS), in a private chat or the operator chat: four
charts and the summary, with buttons for the period, a breakdown, and the PDF or XLSX."""
from __future__ import annotations

from aiogram import F, Router
from aiogram.enums import ChatAction, ChatType
from aiogram.filters import Command, CommandObject, Filter
from aiogram.filters.callback_data import CallbackData
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.analytics.queries import dimensions
from bot.analytics.request import BadRequest
from bot.analytics.service import MAX_DAYS, Analytics
from bot.config import Settings
from bot.texts import t

PERIODS = (7, 30, 90)
DEFAULT_DAYS = 30
FILES = ("pdf", "xlsx")


class ReportCb(CallbackData, prefix="rp"):
    days: int
    by: str = ""  # a breakdown to show
    fmt: str = ""  # a file to send
    f: str = ""  # the key of the report's filters


class Admin(Filter):
    """An admin, in a private chat or the operator chat."""

    async def __call__(self, event: Message | CallbackQuery, settings: Settings) -> bool:
        message = event if isinstance(event, Message) else event.message
        if event.from_user is None or event.from_user.id not in settings.admin_ids or message is None:
            return False
        return message.chat.type == ChatType.PRIVATE or message.chat.id in settings.operator_chats


def keyboard(analytics: Analytics, days: int, filters: str) -> InlineKeyboardMarkup:
    lang, labels = analytics.lang, analytics.labels()

    def button(text: str, *, period: int = days, by: str = "", fmt: str = "") -> InlineKeyboardButton:
        return InlineKeyboardButton(text=text, callback_data=ReportCb(days=period, by=by, fmt=fmt, f=filters).pack())

    periods = [button(("• " if n == days else "") + t(lang, "analytics.buttons.days", days=n), period=n) for n in PERIODS]
    breakdowns = [button(labels.dimension(name), by=name) for name in dimensions(analytics.quiz) if name != "language"]
    files = [button(t(lang, f"analytics.buttons.{fmt}"), fmt=fmt) for fmt in FILES]
    return InlineKeyboardMarkup(inline_keyboard=[periods, *(breakdowns[i:i + 3] for i in range(0, len(breakdowns), 3)), files])


async def report_command(message: Message, command: CommandObject, analytics: Analytics) -> None:
    """``/report [days] [key=value …]``."""
    words = (command.args or "").split()
    days = DEFAULT_DAYS
    try:
        if words and words[0].isdigit():
            days = int(words.pop(0))
            if not 1 <= days <= MAX_DAYS:
                raise BadRequest(str(days), [f"1–{MAX_DAYS}"])
        filters = analytics.filters(words)
    except BadRequest as exc:
        await message.answer(t(analytics.lang, "analytics.bad_args", arg=exc.arg, choices=", ".join(exc.choices)))
        return
    await message.bot.send_chat_action(message.chat.id, ChatAction.UPLOAD_PHOTO, message_thread_id=message.message_thread_id)
    report = await analytics.report(analytics.period(days), filters)
    markup = keyboard(analytics, days, await analytics.remember_filters(words))
    await analytics.deliver(message.chat.id, report, thread_id=message.message_thread_id, markup=markup)


async def report_button(query: CallbackQuery, callback_data: ReportCb, analytics: Analytics) -> None:
    pairs = await analytics.recall_filters(callback_data.f)
    try:
        if pairs is None or callback_data.days not in range(1, MAX_DAYS + 1):
            raise BadRequest(callback_data.f)
        filters = analytics.filters(pairs)  # the quiz or the operators may have changed since
    except BadRequest:
        await query.answer(t(analytics.lang, "analytics.stale"), show_alert=True)
        return
    await query.answer(t(analytics.lang, "analytics.working"))
    chat, thread, period = query.message.chat.id, query.message.message_thread_id, analytics.period(callback_data.days)
    if callback_data.fmt in FILES:
        report = await analytics.report(period, filters, by=dimensions(analytics.quiz))
        await analytics.deliver_file(chat, report, callback_data.fmt, thread_id=thread)
    elif callback_data.by:
        report = await analytics.report(period, filters, by=(callback_data.by,))
        await analytics.deliver_breakdown(chat, report, callback_data.by, thread_id=thread)
    else:
        report = await analytics.report(period, filters)
        await analytics.deliver(chat, report, thread_id=thread, markup=keyboard(analytics, callback_data.days, callback_data.f))


async def not_an_admin(query: CallbackQuery, analytics: Analytics) -> None:
    await query.answer(t(analytics.lang, "analytics.admins_only"), show_alert=True)


def create_router() -> Router:
    """The analytics router; include it before the relay's and the journey's catch-alls."""
    router = Router(name="analytics")
    router.message.register(report_command, Command("report"), Admin())
    router.callback_query.register(report_button, ReportCb.filter(), Admin(), F.message)
    router.callback_query.register(not_an_admin, ReportCb.filter())
    return router
