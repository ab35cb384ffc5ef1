"""Every figure of the report, counted in the database (GROUP BY over indexed ranges), the same on SQLite
and PostgreSQL. The analytics SQL lives here; it reads the other parts' tables through their models.

A period's leads are a cohort: the leads that arrived within it (merged duplicates left out), followed
to wherever they have got by now. A lead "reached" a funnel stage when it is there or further now, or ever
was (``furthest_stage``: a lost deal keeps the stages it passed). Percentiles are nearest-rank, taken from
the value counts the database groups (exact, and far cheaper on SQLite than window functions).
"""
from __future__ import annotations

from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, String, and_, case, cast, exists, false, func, literal, or_, select, true, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from bot.analytics.models import AdSpend
from bot.analytics.period import Period, local_day, local_week
from bot.db.models import Lead, LeadEvent
from bot.db.sql import epoch, json_has_any, json_items
from bot.funnel import CLOSED, KEY_STAGE, SOLD_STAGE, STAGES, depth
from bot.journal import SLA_BREACHED
from bot.quiz import Quiz
from bot.relay.models import RelayWait
from broadcasts.models import BLOCKED, HOLDOUT, ONEOFF, SENT, STEP, Broadcast, Delivery, Enrollment

BOT_STEPS = ("quiz_completed", "greeted", "catalog_sent", "test_batch_requested")
CRM_STEPS = STAGES[STAGES.index(KEY_STAGE):]  # the key stage … repeat sale
STEPS = ("arrived", *BOT_STEPS, *CRM_STEPS)
DEPTH = {stage: depth(stage) for stage in (*STAGES, "won")}
FIXED_DIMENSIONS = ("path", "source", "medium", "campaign", "week", "manager", "language")
RESPONSE_BUCKETS = (60, 300, 900, 3600, 4 * 3600)  # upper bounds (seconds) of the response-time bars
NONE = ""  # the key of "not known" (no source, no answer…)


@dataclass(frozen=True)
class Filters:
    """Which leads count. ``managers``: amoCRM user ids of the responsible manager (empty: nobody)."""

    source: str | None = None
    medium: str | None = None
    campaign: str | None = None
    path: str | None = None
    language: str | None = None
    managers: tuple[int, ...] | None = None
    answers: tuple[tuple[str, str], ...] = ()  # (quiz question key, option key)

    @property
    def active(self) -> bool:
        return self != Filters()

    @property
    def spend_known(self) -> bool:
        """Spend is known per source and campaign: any other filter splits the leads in a way it is not."""
        return all(value is None for value in (self.medium, self.path, self.language, self.managers)) and not self.answers


@dataclass(frozen=True)
class Scope:
    """What a query counts: the period, the filters, and what reading them needs."""

    period: Period
    filters: Filters
    quiz: Quiz
    dialect: str

    def leads(self) -> list[ColumnElement[bool]]:
        """The filters as conditions on ``leads`` (merged duplicates never count)."""
        f, conditions = self.filters, [Lead.merged_into_id.is_(None)]
        for value, column in ((f.source, _lower(Lead.source)), (f.medium, _lower(Lead.utm["medium"].as_string())),
                              (f.campaign, campaign_of())):
            if value is not None:
                conditions.append(column == value.lower())
        if f.path is not None:
            conditions.append(Lead.arrival == f.path)
        if f.language is not None:
            conditions.append(Lead.language == f.language)
        if f.managers is not None:
            conditions.append(Lead.responsible_user_id.in_(f.managers))  # none: matches nobody
        for key, option in f.answers:
            question = self.quiz.question(key)
            if question is not None and question.type == "multi":
                conditions.append(json_has_any(Lead.interests, key, [option], self.dialect))
            else:
                conditions.append(Lead.interests[key].as_string() == option)
        return conditions

    def of_leads(self, lead_id: Any) -> list[ColumnElement[bool]]:
        """Rows of another table whose lead counts (no join at all without filters)."""
        return [lead_id == Lead.id, *self.leads()] if self.filters.active else []

    def within(self, column: Any) -> ColumnElement[bool]:
        return and_(column >= self.period.start, column < self.period.end)


@dataclass
class Counts:
    """How many leads of a group reached each step of :data:`STEPS`, were lost, and the revenue (kopecks)."""

    steps: dict[str, int]
    lost: int = 0
    revenue: int = 0

    @property
    def arrived(self) -> int:
        return self.steps["arrived"]

    @property
    def key(self) -> int:
        return self.steps[KEY_STAGE]

    @property
    def sold(self) -> int:
        return self.steps[SOLD_STAGE]


@dataclass(frozen=True)
class Quantiles:
    """Nearest-rank percentiles of ``n`` values."""

    n: int
    p50: int
    p90: int
    p95: int
    max: int

    @classmethod
    def of(cls, counted: Sequence[tuple[int, int]]) -> Quantiles:
        """From ``(value, how many)`` pairs in ascending order of value."""
        n = sum(count for _, count in counted)
        ranks = {share: (n * share + 99) // 100 for share in (50, 90, 95)}  # ceil(n * share / 100)
        found: dict[int, int] = {}
        seen = 0
        for value, count in counted:
            seen += count
            for share, rank in ranks.items():
                if share not in found and seen >= rank:
                    found[share] = value
        return cls(n, found[50], found[90], found[95], counted[-1][0])


@dataclass
class ManagerTimes:
    """A manager's first answers to buyers' questions (wall-clock seconds)."""

    tg_id: int
    name: str
    all: Quantiles | None = None
    in_hours: Quantiles | None = None
    off_hours: Quantiles | None = None
    buckets: list[int] = field(default_factory=lambda: [0] * (len(RESPONSE_BUCKETS) + 1))


@dataclass(frozen=True)
class BroadcastFigures:
    """One variant of a broadcast (or its holdout: the leads kept out, to measure it against)."""

    broadcast_id: int
    variant: str
    recipients: int
    delivered: int
    blocked: int
    replied: int
    unsubscribed: int
    converted: int

    @property
    def held_out(self) -> bool:
        return self.variant == HOLDOUT

    @property
    def reached(self) -> int:
        """What the outcomes are counted out of: the delivered messages, or the leads held out."""
        return self.recipients if self.held_out else self.delivered


@dataclass(frozen=True)
class BroadcastInfo:
    id: int
    name: str
    kind: str
    sequence: str | None
    step: str | None
    started_at: datetime | None


# ------------------------------------------------------------------ leads
def _lower(value: Any) -> Any:
    return func.lower(value)


def campaign_of() -> Any:
    """The UTM campaign: ``campaign`` from ad links, ``name`` from Marquiz's ``extra.utm``."""
    return _lower(func.coalesce(Lead.utm["campaign"].as_string(), Lead.utm["name"].as_string()))


def rank(stage: Any) -> Any:
    """:func:`bot.funnel.depth` in SQL."""
    return case(DEPTH, value=stage, else_=-1)


def _flag(condition: ColumnElement[bool]) -> Any:
    return case((condition, 1), else_=0)


def _dimension(name: str, period: Period) -> Any:
    """A fixed dimension as an expression on ``leads``."""
    if name == "week":
        return local_week(local_day(Lead.created_at, period))
    if name == "campaign":
        return campaign_of()
    if name in ("source", "medium"):
        return _lower(Lead.source if name == "source" else Lead.utm["medium"].as_string())
    return {"path": Lead.arrival, "manager": Lead.responsible_user_id, "language": Lead.language}[name]


def dimensions(quiz: Quiz) -> tuple[str, ...]:
    """Every breakdown: the fixed ones, then each choice question of the quiz."""
    return (*FIXED_DIMENSIONS, *(q.key for q in quiz.questions if q.type != "text"))


def facts(scope: Scope, by: Sequence[str] = ()) -> Any:
    """One row per lead that arrived in the period, with the columns that breakdowns ``by`` need (a CTE)."""
    now, ever = rank(Lead.stage), rank(Lead.furthest_stage)
    columns = [
        Lead.id,
        _flag(Lead.quiz_completed_at.is_not(None)).label("quiz_completed"),
        _flag(Lead.greeted_at.is_not(None)).label("greeted"),
        _flag(Lead.catalog_sent_at.is_not(None)).label("catalog_sent"),
        _flag(Lead.test_batch_requested_at.is_not(None)).label("test_batch_requested"),
        case((now >= ever, now), else_=ever).label("reached"),
        _flag(Lead.stage == "lost").label("lost"),
        Lead.deal_price.label("price"),
        (epoch(Lead.key_stage_at) - epoch(Lead.created_at)).label("key_seconds"),
    ]
    columns += [_dimension(name, scope.period).label(name) for name in dict.fromkeys(by) if name in FIXED_DIMENSIONS]
    if any(name not in FIXED_DIMENSIONS for name in by):  # quiz answers
        columns.append(Lead.interests)
    return select(*columns).where(scope.within(Lead.created_at), *scope.leads()).cte("facts")


def _grouped(f: Any, dimension: str, scope: Scope) -> tuple[Any, Any]:
    """(the group key as text, the FROM of ``f`` that yields it) of a dimension."""
    if dimension == "total":
        return literal(NONE), f
    if dimension in FIXED_DIMENSIONS:
        return func.coalesce(cast(f.c[dimension], String), NONE), f
    question = scope.quiz.question(dimension)
    if question is None or question.type == "text":
        raise ValueError(f"unknown breakdown {dimension!r}")
    if question.type == "multi":  # a lead in each group it picked (or in "no answer")
        items = json_items(f.c.interests, dimension, scope.dialect)
        return func.coalesce(items.c.value, NONE), f.outerjoin(items, true())
    return func.coalesce(f.c.interests[dimension].as_string(), NONE), f


async def funnel(session: AsyncSession, scope: Scope, by: Sequence[str] = ()) -> dict[str, dict[str, Counts]]:
    """``{dimension: {key: counts}}`` for ``"total"`` and each of ``by``, in one statement: the database counts
    the leads of each group by how far they got; the steps add those up."""
    f = facts(scope, by)
    sums = [func.count(), *(func.sum(f.c[step]) for step in BOT_STEPS), func.sum(f.c.price)]
    branches = []
    for dimension in ("total", *by):
        key, source = _grouped(f, dimension, scope)
        groups = (f.c.reached, f.c.lost) if dimension == "total" else (key, f.c.reached, f.c.lost)
        branches.append(select(literal(dimension), key, f.c.reached, f.c.lost, *sums).select_from(source).group_by(*groups))
    result: dict[str, dict[str, Counts]] = {dimension: {} for dimension in ("total", *by)}
    for dimension, key, reached, lost, arrived, *bot_steps, price in await session.execute(union_all(*branches)):
        counts = result[dimension].setdefault(key, Counts(dict.fromkeys(STEPS, 0)))
        counts.steps["arrived"] += arrived
        for step, n in zip(BOT_STEPS, bot_steps):
            counts.steps[step] += int(n)
        for stage in CRM_STEPS:
            counts.steps[stage] += arrived if reached >= DEPTH[stage] else 0
        counts.lost += arrived if lost else 0
        counts.revenue += int(price or 0) * 100 if reached >= DEPTH[SOLD_STAGE] else 0  # budgets are whole roubles
    result["total"].setdefault(NONE, Counts(dict.fromkeys(STEPS, 0)))
    return result


async def _distributions(session: AsyncSession, query: Any) -> dict[tuple[Any, ...], Counter[int]]:
    """``query`` selects group columns, a value and how often it occurs (GROUP BY groups, value)."""
    counted: defaultdict[tuple[Any, ...], Counter[int]] = defaultdict(Counter)
    for *group, value, count in await session.execute(query):
        counted[tuple(group)][int(value)] += count
    return counted


def quantiles(counted: Counter[int]) -> Quantiles:
    return Quantiles.of(sorted(counted.items()))


def merged(counters: Iterable[Counter[int]]) -> Counter[int]:
    total: Counter[int] = Counter()
    for counter in counters:
        total.update(counter)
    return total


async def time_to_key(session: AsyncSession, scope: Scope, by: Sequence[str] = ()) -> dict[str, dict[str, Quantiles]]:
    """Seconds from arrival to the key stage: ``{dimension: {key: quantiles}}``."""
    f = facts(scope, by)
    branches = []
    for dimension in ("total", *by):
        key, source = _grouped(f, dimension, scope)
        branches.append(select(literal(dimension), key, f.c.key_seconds, func.count())
                        .select_from(source).where(f.c.key_seconds.is_not(None))
                        .group_by(*(() if dimension == "total" else (key,)), f.c.key_seconds))
    result: dict[str, dict[str, Quantiles]] = {dimension: {} for dimension in ("total", *by)}
    for (dimension, key), counted in (await _distributions(session, union_all(*branches))).items():
        result[dimension][key] = quantiles(counted)
    return result


async def first_replies(session: AsyncSession, scope: Scope) -> dict[str, Quantiles]:
    """The bot's first reply (ms) to the leads of the period, by arrival path (``"*"``: all of them)."""
    path = func.coalesce(Lead.arrival, NONE)
    query = (select(path, Lead.first_reply_ms, func.count())
             .where(scope.within(Lead.created_at), Lead.first_reply_ms.is_not(None), *scope.leads())
             .group_by(path, Lead.first_reply_ms))
    by_path = {path: counted for (path,), counted in (await _distributions(session, query)).items()}
    everyone = merged(by_path.values())
    return {key: quantiles(counted) for key, counted in (by_path | ({"*": everyone} if everyone else {})).items()}


async def arrivals_by_day(session: AsyncSession, scope: Scope) -> dict[tuple[int, str], int]:
    """Leads per (local day index, arrival path)."""
    day = local_day(Lead.created_at, scope.period)
    path = func.coalesce(Lead.arrival, NONE)
    query = select(day, path, func.count()).where(scope.within(Lead.created_at), *scope.leads()).group_by(day, path)
    return {(int(index), key): n for index, key, n in await session.execute(query)}


# --------------------------------------------------------------- managers
async def manager_times(session: AsyncSession, scope: Scope) -> list[ManagerTimes]:
    """Each manager's first answers to the buyers' questions of the period: percentiles within and outside
    working hours and overall, and how many fell in each of :data:`RESPONSE_BUCKETS`; the team last (id 0)."""
    seconds = epoch(RelayWait.closed_at) - epoch(RelayWait.started_at)
    query = (
        select(RelayWait.answered_by, func.max(RelayWait.answered_by_name), RelayWait.in_hours, seconds, func.count())
        .where(scope.within(RelayWait.started_at), RelayWait.dismissed.is_(false()), RelayWait.closed_at.is_not(None),
               RelayWait.answered_by.is_not(None), *scope.of_leads(RelayWait.lead_id))
        .group_by(RelayWait.answered_by, RelayWait.in_hours, seconds)
    )
    names: dict[int, str] = {}
    counted: defaultdict[tuple[int, bool | None], Counter[int]] = defaultdict(Counter)
    for tg_id, name, in_hours, value, count in await session.execute(query):
        names[tg_id] = name or names.get(tg_id) or str(tg_id)
        counted[tg_id, in_hours][int(value)] = count
    if not names:
        return []
    managers = {tg_id: ManagerTimes(tg_id, name) for tg_id, name in names.items()}
    team = ManagerTimes(0, "")
    for target in (*managers.values(), team):
        mine = [(hours, values) for (tg_id, hours), values in counted.items() if target is team or tg_id == target.tg_id]
        everything = merged(values for _, values in mine)
        target.all = quantiles(everything)
        for hours, attribute in ((True, "in_hours"), (False, "off_hours")):
            part = merged(values for within, values in mine if within is hours)
            setattr(target, attribute, quantiles(part) if part else None)
        for value, count in everything.items():
            target.buckets[bisect_right(RESPONSE_BUCKETS, value)] += count
    return [*sorted(managers.values(), key=lambda m: (m.all.p50 if m.all else 0, m.name)), team]


async def sla_breaches(session: AsyncSession, scope: Scope) -> dict[tuple[str, int], int]:
    """Overdue answers of the period: ``{(manager pinged, level): count}`` (level 2: escalated to the head)."""
    manager = func.coalesce(LeadEvent.data["manager"].as_string(), NONE)
    level = LeadEvent.data["level"].as_integer()
    query = (select(manager, level, func.count())
             .where(LeadEvent.kind == SLA_BREACHED, scope.within(LeadEvent.created_at), *scope.of_leads(LeadEvent.lead_id))
             .group_by(manager, level))
    return {(name, int(level or 1)): n for name, level, n in await session.execute(query)}


async def waiting_now(session: AsyncSession, scope: Scope) -> tuple[int, datetime | None]:
    """Buyers' questions no manager has answered yet: how many, and since when the oldest waits."""
    query = select(func.count(), func.min(RelayWait.started_at)).where(RelayWait.closed_at.is_(None), *scope.of_leads(RelayWait.lead_id))
    count, oldest = (await session.execute(query)).one()
    return count, oldest


async def without_task(session: AsyncSession, scope: Scope) -> int:
    """Open deals amoCRM showed without an open task at its last check (the rule says: none)."""
    query = select(func.count()).select_from(Lead).where(Lead.no_task_since.is_not(None), Lead.stage.not_in(CLOSED), *scope.leads())
    return (await session.execute(query)).scalar_one()


# ------------------------------------------------------------- broadcasts
async def broadcast_figures(session: AsyncSession, scope: Scope) -> list[BroadcastFigures]:
    """Per broadcast and variant (the holdout as its own): one-off broadcasts started in the period, and sequence
    steps sent to the leads who entered their sequence in it. Replies and opt-outs within 48 h and the key stage
    within 7 days, as the broadcasts credit them."""
    entered = exists().where(Enrollment.sequence == Broadcast.sequence, Enrollment.lead_id == Delivery.lead_id,
                             scope.within(Enrollment.entered_at))
    chosen = select(Broadcast.id).where(or_(and_(Broadcast.kind == ONEOFF, scope.within(Broadcast.started_at)), Broadcast.kind == STEP))
    query = (
        select(Delivery.broadcast_id, Delivery.variant, func.count(), func.sum(_flag(Delivery.state == SENT)),
               func.sum(_flag(Delivery.state == BLOCKED)), func.count(Delivery.replied_at), func.count(Delivery.unsubscribed_at),
               func.count(Delivery.converted_at))
        .join(Broadcast, Broadcast.id == Delivery.broadcast_id)
        .where(Delivery.broadcast_id.in_(chosen), or_(Broadcast.kind == ONEOFF, entered), *scope.of_leads(Delivery.lead_id))
        .group_by(Delivery.broadcast_id, Delivery.variant)
        .order_by(Delivery.broadcast_id, Delivery.variant)
    )
    return [BroadcastFigures(broadcast_id, variant, *(int(n or 0) for n in counts))
            for broadcast_id, variant, *counts in await session.execute(query)]


async def broadcasts(session: AsyncSession, ids: Sequence[int]) -> dict[int, BroadcastInfo]:
    query = select(Broadcast.id, Broadcast.name, Broadcast.kind, Broadcast.sequence, Broadcast.step, Broadcast.started_at).where(
        Broadcast.id.in_(ids))
    return {row.id: BroadcastInfo(*row) for row in await session.execute(query)}


# ------------------------------------------------------------------ spend
async def spend(session: AsyncSession, period: Period) -> dict[tuple[str, str], int]:
    """Ad spend of the period in kopecks: ``{(source, campaign): amount}`` (lower case; campaign "" = the source)."""
    source, campaign = _lower(AdSpend.source), _lower(AdSpend.campaign)
    query = (select(source, campaign, func.sum(AdSpend.amount))
             .where(AdSpend.day >= period.first, AdSpend.day <= period.last).group_by(source, campaign))
    return {(s, c): int(amount) for s, c, amount in await session.execute(query)}
