"""The report: every figure of a period (and the previous one for comparison), built by running the
queries side by side, a few at a time, each in its own session (reads run in parallel on SQLite too)."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from bot.analytics import queries
from bot.analytics.period import Period, day_of, monday_of
from bot.analytics.queries import NONE, BroadcastFigures, BroadcastInfo, Counts, Filters, ManagerTimes, Quantiles, Scope
from bot.db.base import utcnow
from bot.db.session import Database
from bot.quiz import Quiz

T = TypeVar("T")
REPORT_CHARTS = ("funnel", "sources", "managers", "days")  # the charts of /report and the digest, in order
READERS = 3  # queries at a time: enough to keep the database's cores busy, each with its own cache and sort space


@dataclass
class Row:
    """One group of a breakdown: its key, its funnel, what it cost and how fast it got to the key stage."""

    key: str
    counts: Counts
    spend: int | None = None  # kopecks; None: ad spend is not known for this kind of group
    time_to_key: Quantiles | None = None


@dataclass
class BroadcastRow:
    info: BroadcastInfo
    variants: list[BroadcastFigures]  # the holdout among them, if one was configured

    @property
    def sent(self) -> list[BroadcastFigures]:
        return [v for v in self.variants if not v.held_out]

    @property
    def holdout(self) -> BroadcastFigures | None:
        return next((v for v in self.variants if v.held_out), None)

    @property
    def total(self) -> BroadcastFigures:
        """Every variant that was sent, together."""
        sums = [sum(getattr(v, name) for v in self.sent) for name in
                ("recipients", "delivered", "blocked", "replied", "unsubscribed", "converted")]
        return BroadcastFigures(self.info.id, "", *sums)


@dataclass
class Report:
    period: Period
    filters: Filters
    generated_at: datetime
    total: Counts
    previous: Counts
    time_to_key: Quantiles | None
    breakdowns: dict[str, list[Row]]
    days: list[tuple[date, dict[str, int]]]
    first_replies: dict[str, Quantiles]
    managers: list[ManagerTimes]  # the team last
    breaches: dict[str, tuple[int, int]]  # manager pinged → (pings, escalations to the head of sales)
    waiting: int
    waiting_since: datetime | None
    without_task: int | None  # None: amoCRM is not connected, nobody checks
    broadcasts: list[BroadcastRow]
    spend: int | None  # kopecks; None: the filters split leads in a way spend (per source and campaign) is not

    @property
    def revenue(self) -> int:
        return self.total.revenue

    @property
    def team(self) -> ManagerTimes | None:
        return self.managers[-1] if self.managers else None


def _spend_of(dimension: str, key: str, spend: Mapping[tuple[str, str], int]) -> int | None:
    if dimension == "source":
        return sum(amount for (source, _), amount in spend.items() if source == key)
    if dimension == "campaign":
        return sum(amount for (_, campaign), amount in spend.items() if campaign == key and key)
    return None


def _order(dimension: str, rows: list[Row]) -> list[Row]:
    """Weeks in time order; anything else by leads, the unknown last."""
    if dimension == "week":
        return sorted(rows, key=lambda row: int(row.key) if row.key else -1)
    return sorted(rows, key=lambda row: (row.key == NONE, -row.counts.arrived, row.key))


async def build(
    db: Database, quiz: Quiz, period: Period, filters: Filters = Filters(), *,
    by: Sequence[str] = ("source",), crm: bool = False,
) -> Report:
    """Every figure of ``period`` (breakdowns ``by``) and the previous period's funnel.

    ``crm``: amoCRM is connected (so the leads without a task are counted).
    """
    dialect = db.engine.dialect.name
    scope = Scope(period, filters, quiz, dialect)
    before = Scope(period.previous(), filters, quiz, dialect)

    reading = asyncio.Semaphore(READERS)

    async def read(query: Callable[[AsyncSession], Awaitable[T]]) -> T:
        async with reading, db() as session:
            return await query(session)

    results: list[Any] = await asyncio.gather(
        read(lambda s: queries.funnel(s, scope, by)),
        read(lambda s: queries.funnel(s, before)),
        read(lambda s: queries.time_to_key(s, scope, by)),
        read(lambda s: queries.arrivals_by_day(s, scope)),
        read(lambda s: queries.first_replies(s, scope)),
        read(lambda s: queries.manager_times(s, scope)),
        read(lambda s: queries.sla_breaches(s, scope)),
        read(lambda s: queries.waiting_now(s, scope)),
        read(lambda s: queries.without_task(s, scope)),
        read(lambda s: queries.broadcast_figures(s, scope)),
        read(lambda s: queries.spend(s, period)),
    )
    funnel, previous, times, days, replies, managers, breaches, waiting, bare, figures, spend = results
    if filters.source or filters.campaign:  # the spend of the source or campaign looked at
        spend = {(s, c): a for (s, c), a in spend.items()
                 if s == (filters.source or s).lower() and (not filters.campaign or c == filters.campaign.lower())}
    breakdowns = {
        dimension: _order(dimension, [Row(key, counts, _spend_of(dimension, key, spend), times[dimension].get(key))
                                      for key, counts in funnel[dimension].items()])
        for dimension in by
    }
    per_day: dict[int, dict[str, int]] = {}
    for (index, path), n in days.items():
        per_day.setdefault(index, {})[path] = n
    first_day = (period.first - day_of(0)).days
    pinged: dict[str, list[int]] = {}
    for (manager, level), n in breaches.items():
        pinged.setdefault(manager, [0, 0])[1 if level >= 2 else 0] += n
    info = await read(lambda s: queries.broadcasts(s, sorted({f.broadcast_id for f in figures})))
    grouped: dict[int, list[BroadcastFigures]] = {}
    for figure in figures:
        grouped.setdefault(figure.broadcast_id, []).append(figure)
    return Report(
        period=period, filters=filters, generated_at=utcnow(), total=funnel["total"][NONE], previous=previous["total"][NONE],
        time_to_key=times["total"].get(NONE), breakdowns=breakdowns,
        days=[(day_of(first_day + offset), per_day.get(first_day + offset, {})) for offset in range(period.days)],
        first_replies=replies, managers=managers, breaches={k: (v[0], v[1]) for k, v in pinged.items()},
        waiting=waiting[0], waiting_since=waiting[1], without_task=bare if crm else None,
        broadcasts=[BroadcastRow(info[i], grouped[i]) for i in sorted(grouped, reverse=True) if i in info],
        spend=sum(spend.values()) if filters.spend_known else None,
    )


def week_start(key: str) -> date:
    """The Monday of a ``week`` breakdown key."""
    return monday_of(int(key))
