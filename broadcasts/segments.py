"""Segments: declarative filters over leads, compiled to SQL and read in keyset pages.

Every segment leaves out buyers who unsubscribed, blocked the bot, are banned, were merged
into another lead or never wrote to the bot. A segment is read page by page
(``id > checkpoint ORDER BY id LIMIT n``, each page in its own short transaction), so a
base of any size is selected in constant memory and a crashed selection resumes at its
checkpoint.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from sqlalchemy import ColumnElement, and_, false, func, not_, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import Lead
from bot.db.sql import json_has_any
from bot.funnel import CLOSED, STAGES
from bot.quiz import Quiz


def _listify(value: Any) -> Any:
    return [value] if isinstance(value, (str, int)) else value


Keys = Annotated[list[str], BeforeValidator(_listify)]


class Activity(BaseModel):
    """A timestamp older or newer than N days; "older" includes never."""

    model_config = ConfigDict(extra="forbid")
    older_than_days: int | None = Field(default=None, ge=0)
    newer_than_days: int | None = Field(default=None, ge=1)


class Segment(BaseModel):
    """Who gets a broadcast. List fields match any of their values; empty fields match everyone."""

    model_config = ConfigDict(extra="forbid")
    category: Keys = []  # quiz category keys
    volume: Keys = []
    channel: Keys = []
    city: Keys = []
    stage: Keys = []  # funnel stage keys (bot/funnel.py)
    not_stage: Keys = []
    source: Keys = []
    utm: dict[str, str] = {}
    tags: Keys = []
    not_tags: Keys = []
    language: Keys = []
    catalog_sent: bool | None = None
    test_batch_requested: bool | None = None
    last_message: Activity | None = None  # the buyer's last message to the bot
    last_broadcast: Activity | None = None

    def problems(self, quiz: Quiz) -> list[str]:
        """Keys that match nothing (a typo would silently empty the segment)."""
        found = []
        for key in ("category", "volume", "channel"):
            question = quiz.question(key)
            known = {option.key for option in question.options} if question else set()
            found += [f"segment.{key}: unknown option {value!r} (one of {', '.join(sorted(known))})" for value in getattr(self, key) if value not in known]
        stages = (*STAGES, *CLOSED)
        found += [f"segment.{field}: unknown stage {value!r}" for field in ("stage", "not_stage") for value in getattr(self, field) if value not in stages]
        return found


@dataclass(frozen=True, slots=True)
class Recipient:
    """What sending to a lead needs (read with the segment, never the whole row)."""

    id: int
    tg_user_id: int
    first_name: str | None
    last_name: str | None
    company: str | None
    tg_username: str | None
    language: str
    interests: dict[str, Any]
    stage: str
    source: str | None


COLUMNS = (Lead.id, Lead.tg_user_id, Lead.first_name, Lead.last_name, Lead.company, Lead.tg_username,
           Lead.language, Lead.interests, Lead.stage, Lead.source)


def reachable() -> ColumnElement[bool]:
    """Leads marketing may write to at all."""
    return and_(Lead.tg_user_id.is_not(None), Lead.unsubscribed_at.is_(None), Lead.is_blocked.is_(false()),
                Lead.is_banned.is_(false()), Lead.merged_into_id.is_(None))


def _activity(column: Any, activity: Activity | None, now: datetime) -> list[ColumnElement[bool]]:
    if activity is None:
        return []
    found = []
    if activity.older_than_days is not None:
        found.append(or_(column.is_(None), column < now - timedelta(days=activity.older_than_days)))
    if activity.newer_than_days is not None:
        found.append(column >= now - timedelta(days=activity.newer_than_days))
    return found


def _flag(column: Any, wanted: bool | None) -> list[ColumnElement[bool]]:
    return [] if wanted is None else [column.is_not(None) if wanted else column.is_(None)]


def where(segment: Segment, dialect: str, now: datetime) -> ColumnElement[bool]:
    """The segment as a SQL condition on ``leads`` (``dialect``: ``sqlite`` or ``postgresql``)."""
    s = segment
    conditions: list[ColumnElement[bool]] = [reachable()]
    if s.category:
        conditions.append(json_has_any(Lead.interests, "category", s.category, dialect))
    for key in ("volume", "channel"):
        if getattr(s, key):
            conditions.append(Lead.interests[key].as_string().in_(getattr(s, key)))
    if s.city:
        spellings = {form for city in s.city for form in (city.strip(), city.strip().lower(), city.strip().title())}
        conditions.append(Lead.interests["city"].as_string().in_(sorted(spellings)))
    if s.stage:
        conditions.append(Lead.stage.in_(s.stage))
    if s.not_stage:
        conditions.append(Lead.stage.not_in(s.not_stage))
    if s.source:
        conditions.append(Lead.source.in_(s.source))
    conditions += [Lead.utm[key].as_string() == value for key, value in s.utm.items()]
    if s.tags:
        conditions.append(json_has_any(Lead.tags, None, s.tags, dialect))
    if s.not_tags:
        conditions.append(not_(json_has_any(Lead.tags, None, s.not_tags, dialect)))
    if s.language:
        conditions.append(Lead.language.in_(s.language))
    conditions += _flag(Lead.catalog_sent_at, s.catalog_sent) + _flag(Lead.test_batch_requested_at, s.test_batch_requested)
    conditions += _activity(Lead.last_inbound_at, s.last_message, now) + _activity(Lead.last_broadcast_at, s.last_broadcast, now)
    return and_(true(), *conditions)


def _dialect(session: AsyncSession) -> str:
    return session.bind.dialect.name


async def count(session: AsyncSession, segment: Segment, now: datetime) -> int:
    query = select(func.count()).select_from(Lead).where(where(segment, _dialect(session), now))
    return (await session.execute(query)).scalar_one()


async def sample(session: AsyncSession, segment: Segment, now: datetime, size: int = 5) -> list[Recipient]:
    query = select(*COLUMNS).where(where(segment, _dialect(session), now)).order_by(Lead.id).limit(size)
    return [Recipient(*row) for row in await session.execute(query)]


async def last_id(session: AsyncSession) -> int:
    """The newest lead id: the snapshot a broadcast's audience is taken up to."""
    return (await session.execute(select(func.coalesce(func.max(Lead.id), 0)))).scalar_one()


async def stream(
    db: async_sessionmaker[AsyncSession], segment: Segment, now: datetime, *, after: int = 0, upto: int | None = None, page: int = 1000,
) -> AsyncIterator[list[Recipient]]:
    """The segment in pages of ``page`` leads by ascending id, after ``after`` up to ``upto``."""
    while True:
        async with db() as session:
            condition = where(segment, _dialect(session), now)
            if upto is not None:
                condition = and_(condition, Lead.id <= upto)
            query = select(*COLUMNS).where(condition, Lead.id > after).order_by(Lead.id).limit(page)
            rows = [Recipient(*row) for row in await session.execute(query)]
        if not rows:
            return
        yield rows
        after = rows[-1].id
