"""Reorder offers: after «Основная партия отправлена» the bot learns the buyer's rhythm (the mean number of days between
their shipped orders; ``REORDER_DEFAULT_DAYS`` after a first one) and ``REORDER_NOTICE_DAYS`` before the expected reorder
offers what is new in their categories since that order, at their tier's prices, with «Повторить заказ» and «Пока не нужно».

Each offer row carries the buyer's shipments so far (``data.shipped``, passed on from row to row) and the SKUs of their
categories at the last one (``data.known``): what the catalogue holds beyond them at the offer is new. A buyer who orders
on their own — the deal entering «Основная партия согласована», «Основная партия отправлена» or «Повторная продажа» a day
or more after the last shipment — has the pending offer cancelled; a new shipment schedules the next. «Повторить заказ» is
a journal event (the CRM outbox moves the deal to «Повторная продажа» and adds a note and a task for the manager);
«Пока не нужно» offers again ``REORDER_SNOOZE_DAYS`` later.
"""
from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import Lead
from bot.followups import store
from bot.followups.buttons import ButtonFollowUp
from bot.followups.models import REORDER, FollowUp
from bot.journal import REORDER_REQUESTED, REORDER_SNOOZED, Journal
from bot.messenger import BuyerUnreachable, Messenger
from bot.ports import Catalog
from bot.texts import t

SHIPPED = "main_batch_sent"
ORDERING = ("main_batch_agreed", SHIPPED, "repeat_sale")  # the buyer is ordering (again)
SAME_ORDER = timedelta(days=1)  # stage moves this close to a shipment belong to it (a late or repeated webhook)
HISTORY = 12  # shipments remembered for the rhythm
MAX_NEW = 10  # new products listed in the offer


class ReorderCb(CallbackData, prefix="fur"):
    followup: int
    again: bool


def rhythm(shipped: list[datetime], default: timedelta) -> timedelta:
    """The mean time between the shipments, or ``default`` after the first."""
    return (shipped[-1] - shipped[0]) / (len(shipped) - 1) if len(shipped) > 1 else default


class Reorders(ButtonFollowUp):
    kind, field, already = REORDER, "answer", "followups.reorder.already"

    def __init__(self, db: async_sessionmaker[AsyncSession], journal: Journal, messenger: Messenger, catalog: Catalog,
                 tell_managers: Callable[[Lead, str], Awaitable[None]], *, clock: Callable[[], datetime], wake: Callable[[], None],
                 default: timedelta, notice: timedelta, snooze: timedelta, tz: ZoneInfo, lang: str) -> None:
        super().__init__(db, journal, messenger, tell_managers, clock=clock, lang=lang)
        self.catalog = catalog
        self.wake = wake
        self.default = default
        self.notice = notice
        self.snooze = snooze
        self.tz = tz  # the managers'

    async def on_stage(self, session: AsyncSession, lead: Lead, stage: str | None, deal: str) -> bool:
        """A stage move: an order of the buyer's own cancels the pending offer, a shipment schedules the next; True if one was."""
        if stage not in ORDERING:
            return False
        now = self.clock()
        last = await store.latest(session, lead.id, REORDER)
        shipped = [datetime.fromisoformat(moment) for moment in (last.data["shipped"] if last else [])]
        if shipped and now - shipped[-1] < SAME_ORDER:
            return False  # the last shipment's own stage moves, late or repeated
        await store.cancel_pending(session, lead.id, REORDER, "reordered")
        if stage != SHIPPED:
            return False
        shipped = [*shipped, now][-HISTORY:]
        expected = now + rhythm(shipped, self.default)
        due = max(expected - self.notice, now + (expected - now) / 2)  # never the day after a shipment
        data = {"shipped": [moment.isoformat() for moment in shipped], "expected": expected.isoformat(),
                "known": self.catalog.assortment(lead.interests or {})}
        return await store.schedule(session, lead_id=lead.id, kind=REORDER, key=f"reorder:{deal}:{int(now.timestamp())}",
                                    due_at=due, now=now, stage=SHIPPED, data=data)

    def offer(self, row: FollowUp, lead: Lead) -> tuple[str, InlineKeyboardMarkup]:
        """The offer: what is new in the buyer's categories since the last order, and their tier's prices."""
        lang, interests = lead.language, lead.interests or {}
        tier, ranges = self.catalog.prices(interests, lang)
        new = self.catalog.novelties(interests, lang, row.data.get("known") or [])
        lines = [t(lang, "followups.reorder.offer")]
        if new:
            lines += [t(lang, "followups.reorder.new"), *(t(lang, "followups.reorder.product", name=p.name, price=p.price) for p in new[:MAX_NEW])]
            if len(new) > MAX_NEW:
                lines.append(t(lang, "followups.reorder.more", count=len(new) - MAX_NEW))
        lines += ["", t(lang, "followups.reorder.prices", tier=tier),
                  *(t(lang, "followups.reorder.range", category=r.category, models=r.models, low=r.low, high=r.high) for r in ranges)]
        buttons = [InlineKeyboardButton(text=t(lang, "followups.reorder.again"), callback_data=ReorderCb(followup=row.id, again=True).pack()),
                   InlineKeyboardButton(text=t(lang, "followups.reorder.later"), callback_data=ReorderCb(followup=row.id, again=False).pack())]
        return "\n".join(lines), InlineKeyboardMarkup(inline_keyboard=[buttons])

    async def answer(self, tg_user_id: int, followup_id: int, again: bool, message_id: int | None) -> str:
        """The buyer tapped «Повторить заказ» or «Пока не нужно»; returns the text the press is answered with."""
        return await self.press(tg_user_id, followup_id, "again" if again else "later", message_id)

    async def record(self, session: AsyncSession, lead: Lead, row: FollowUp, answer: str) -> None:
        if answer == "again":
            await self.journal.event(session, lead, REORDER_REQUESTED, followup=row.id)
            return
        now = self.clock()
        await self.journal.event(session, lead, REORDER_SNOOZED, days=round(self.snooze / timedelta(days=1), 1))
        await store.schedule(session, lead_id=lead.id, kind=REORDER, key=f"reorder-later:{row.id}", due_at=now + self.snooze,
                             now=now, stage=row.stage, data={k: row.data[k] for k in ("shipped", "expected", "known")})

    def managers_text(self, answer: str) -> str:
        when = (self.clock() + self.snooze).astimezone(self.tz).strftime("%d.%m.%Y")
        return t(self.lang, "followups.topic.reorder_again" if answer == "again" else "followups.topic.reorder_later", when=when)

    async def after(self, lead: Lead, row: FollowUp, answer: str) -> str:
        """Thank the buyer; a snoozed offer wakes the loop for its next one."""
        if answer == "later":
            self.wake()
        with contextlib.suppress(BuyerUnreachable):
            await self.messenger.send_text(lead, t(lead.language, "followups.reorder.thanks" if answer == "again" else "followups.reorder.snoozed"))
        return ""
