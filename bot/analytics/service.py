"""``Analytics``: reports on demand (/report), the weekly digest worker, and sending them to Telegram."""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

import structlog
from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest, TelegramForbiddenError
from aiogram.types import BufferedInputFile, InlineKeyboardMarkup, InputMediaPhoto
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.analytics import summary
from bot.analytics.digest import POLL, Schedule, WeeklyDigest
from bot.analytics.drawing import Drawing
from bot.analytics.labels import Labels
from bot.analytics.period import Period
from bot.analytics.queries import Filters
from bot.analytics.report import Report, build
from bot.analytics.request import parse_filters
from bot.config import ConfigError, Settings
from bot.db.base import utcnow
from bot.db.models import KeyValue
from bot.loops import Loop, Worker
from bot.quiz import Quiz
from bot.texts import t

log = structlog.get_logger(__name__)

MAX_DAYS = 366
FILTERS_KEY = "analytics.filters."  # kv: the filters behind a /report's buttons, by a short hash


class Analytics:
    """What the app wires in: ``workers`` (the weekly digest), the /report service, ``close()``.

    ``managers`` names the amoCRM users (responsible managers) the operators file lists.
    """

    def __init__(self, settings: Settings, db: async_sessionmaker[AsyncSession], quiz: Quiz, *, bot: Bot | None = None,
                 managers: Callable[[], Mapping[int, str]] = dict, clock: Callable[[], datetime] = utcnow) -> None:
        self.settings = settings
        self.db = db
        self.quiz = quiz
        self.bot = bot
        self.managers = managers
        self.clock = clock
        self.zone = ZoneInfo(settings.timezone)
        self.lang = settings.default_language
        self.drawing = Drawing()
        schedule = Schedule.parse(settings.report_schedule, self.zone)
        if schedule and settings.report_chat_id is None and not settings.admin_ids:
            log.info("analytics.digest_off", reason=t(self.lang, "analytics.no_admins"))
            schedule = None
        self.digest = WeeklyDigest(db, schedule, self.send_digest, clock) if schedule else None
        self.workers: list[Worker] = [Loop("analytics.digest", self.digest.run_once, every=POLL).run] if self.digest else []

    def labels(self) -> Labels:
        return Labels(self.lang, self.quiz, self.managers())

    def period(self, days: int) -> Period:
        return Period.last_days(days, self.clock(), self.zone)

    def filters(self, pairs: Sequence[str]) -> Filters:
        """``key=value`` filters (raises :class:`~bot.analytics.request.BadRequest`)."""
        return parse_filters(pairs, self.quiz, self.managers())

    async def report(self, period: Period, filters: Filters = Filters(), by: Sequence[str] = ("source",)) -> Report:
        return await build(self.db, self.quiz, period, filters, by=by, crm=self.settings.amocrm_base_url is not None)

    # ------------------------------------------------------------ buttons
    async def remember_filters(self, pairs: Sequence[str]) -> str:
        """A short key for the filters of a report, for its buttons (kept in the database: any instance answers)."""
        text = " ".join(pairs)
        if not text:
            return ""
        key = hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
        async with self.db.begin() as session:
            if await session.get(KeyValue, FILTERS_KEY + key) is None:
                session.add(KeyValue(key=FILTERS_KEY + key, value={"filters": pairs}))
        return key

    async def recall_filters(self, key: str) -> list[str] | None:
        """The filters behind a key; None if unknown."""
        if not key:
            return []
        async with self.db() as session:
            found = await session.get(KeyValue, FILTERS_KEY + key)
        return list(found.value["filters"]) if found else None

    # ----------------------------------------------------------- sending
    def _bot(self) -> Bot:
        if self.bot is None:
            raise ConfigError("optobot: BOT_TOKEN is not set: reports cannot be sent to Telegram")
        return self.bot

    async def deliver(self, chat_id: int, report: Report, *, thread_id: int | None = None, digest: bool = False,
                      markup: InlineKeyboardMarkup | None = None) -> None:
        """The four charts as an album, then the summary (with ``markup`` under it)."""
        bot, labels = self._bot(), self.labels()
        images = await self.drawing.charts(report, labels)
        album = [InputMediaPhoto(media=BufferedInputFile(png, f"chart-{index + 1}.png")) for index, png in enumerate(images)]
        await bot.send_media_group(chat_id, album, message_thread_id=thread_id)
        await bot.send_message(chat_id, summary.summary(report, labels, digest=digest), reply_markup=markup, message_thread_id=thread_id)

    async def deliver_breakdown(self, chat_id: int, report: Report, dimension: str, *, thread_id: int | None = None) -> None:
        bot, labels = self._bot(), self.labels()
        chart = await self.drawing.breakdown(report, labels, dimension)
        await bot.send_photo(chat_id, BufferedInputFile(chart, f"{dimension}.png"), message_thread_id=thread_id)
        await bot.send_message(chat_id, summary.breakdown(report, dimension, labels), message_thread_id=thread_id)

    async def deliver_file(self, chat_id: int, report: Report, fmt: str, *, thread_id: int | None = None) -> None:
        bot, labels = self._bot(), self.labels()
        data = await self.drawing.file(report, labels, fmt)
        period = report.period
        name = f"report-{period.first.isoformat()}-{period.last.isoformat()}.{fmt}"
        caption = t(self.lang, "analytics.file_caption", first=period.first.strftime("%d.%m.%Y"), last=period.last.strftime("%d.%m.%Y"))
        await bot.send_document(chat_id, BufferedInputFile(data, name), caption=caption, message_thread_id=thread_id)

    async def send_digest(self, period: Period) -> None:
        """The weekly digest to REPORT_CHAT_ID, or to each admin. Raises (to be sent again) if Telegram failed."""
        chats = [self.settings.report_chat_id] if self.settings.report_chat_id is not None else sorted(self.settings.admin_ids)
        report = await self.report(period)
        retry: TelegramAPIError | None = None
        for chat_id in chats:
            try:
                await self.deliver(chat_id, report, digest=True)
            except (TelegramForbiddenError, TelegramBadRequest) as exc:  # the chat will not take it: say so, go on
                log.error("analytics.digest_refused", chat_id=chat_id, error=str(exc), setting="REPORT_CHAT_ID / ADMIN_IDS")
            except TelegramAPIError as exc:  # Telegram down or failing: the digest is sent again later
                log.warning("analytics.digest_undelivered", chat_id=chat_id, error=str(exc))
                retry = exc
        if retry is not None:
            raise retry

    def close(self) -> None:
        self.drawing.close()
