"""Segments compiled to SQL (SQLite and PostgreSQL): every filter, the exclusions, keyset streaming."""
from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import DEFAULT_QUIZ
from bot.db.models import Lead
from bot.db.session import open_database
from bot.quiz import load_quiz
from broadcasts import segments
from broadcasts.segments import Segment

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    sessions = open_database(database_url)
    async with sessions.begin() as session:
        a = Lead(tg_user_id=1, first_name="A", interests={"category": ["shoes", "women"], "volume": "100to300k", "channel": "marketplaces", "city": "Казань"},
                 stage="catalog_sent", source="yandex", utm={"campaign": "spring"}, tags=["vip"], catalog_sent_at=ago(5),
                 last_inbound_at=ago(2), last_broadcast_at=ago(10))
        session.add(a)
        await session.flush()
        session.add_all([
            Lead(tg_user_id=2, first_name="B", interests={"category": ["men"], "volume": "over1m", "channel": "own_store", "city": "Москва"},
                 stage="qualified", source="google", language="en", test_batch_requested_at=ago(1), last_inbound_at=ago(30)),
            Lead(tg_user_id=3, first_name="C", interests={"category": ["kids"], "volume": "upto100k", "channel": "social", "city": "казань"},
                 stage="test_batch_sent", tags=["vip", "wholesale"], last_broadcast_at=ago(1)),
            Lead(tg_user_id=4, first_name="Unsubscribed", interests={"category": ["shoes"]}, unsubscribed_at=ago(1)),
            Lead(tg_user_id=5, first_name="Blocked", interests={"category": ["shoes"]}, is_blocked=True),
            Lead(tg_user_id=6, first_name="Banned", interests={"category": ["shoes"]}, is_banned=True),
            Lead(tg_user_id=7, first_name="Merged", interests={"category": ["shoes"]}, merged_into_id=a.id),
            Lead(tg_user_id=None, first_name="Website only", interests={"category": ["shoes"]}),
        ])
    yield sessions
    await sessions.close()


async def names(db: async_sessionmaker[AsyncSession], **fields: object) -> str:
    async with db() as session:
        segment = Segment(**fields)
        found = "".join(r.first_name for r in await segments.sample(session, segment, NOW, size=100))
        assert await segments.count(session, segment, NOW) == len(found)
        return found


@pytest.mark.parametrize(("fields", "expected"), [
    ({}, "ABC"),
    ({"category": ["shoes"]}, "A"),
    ({"category": ["shoes", "kids"]}, "AC"),
    ({"category": "men"}, "B"),
    ({"volume": ["over1m"]}, "B"),
    ({"channel": ["social", "marketplaces"]}, "AC"),
    ({"city": ["Казань"]}, "AC"),
    ({"stage": ["catalog_sent", "qualified"]}, "AB"),
    ({"not_stage": ["test_batch_sent"]}, "AB"),
    ({"source": ["google"]}, "B"),
    ({"utm": {"campaign": "spring"}}, "A"),
    ({"tags": ["vip"]}, "AC"),
    ({"not_tags": ["wholesale"]}, "AB"),
    ({"language": ["en"]}, "B"),
    ({"catalog_sent": True}, "A"),
    ({"catalog_sent": False}, "BC"),
    ({"test_batch_requested": True}, "B"),
    ({"last_message": {"older_than_days": 7}}, "BC"),  # C never wrote
    ({"last_message": {"newer_than_days": 7}}, "A"),
    ({"last_broadcast": {"older_than_days": 3}}, "AB"),  # B never got one
    ({"last_broadcast": {"newer_than_days": 3}}, "C"),
    ({"category": ["shoes", "men"], "last_message": {"newer_than_days": 7}, "tags": ["vip"]}, "A"),
    ({"stage": ["lost"]}, ""),
])
async def test_filters(db: async_sessionmaker[AsyncSession], fields: dict[str, object], expected: str) -> None:
    assert await names(db, **fields) == expected


async def test_streaming_reads_keyset_pages_from_a_checkpoint(db: async_sessionmaker[AsyncSession]) -> None:
    pages = [[r.first_name for r in page] async for page in segments.stream(db, Segment(), NOW, page=2)]
    assert pages == [["A", "B"], ["C"]]
    async with db() as session:
        first = (await segments.sample(session, Segment(), NOW, 1))[0].id
    resumed = [r.first_name async for page in segments.stream(db, Segment(), NOW, after=first, page=2) for r in page]
    assert resumed == ["B", "C"]


def test_unknown_keys_are_reported() -> None:
    quiz = load_quiz(DEFAULT_QUIZ)
    problems = Segment(category=["shoe"], stage=["catalog"]).problems(quiz)
    assert len(problems) == 2 and "unknown option 'shoe'" in problems[0] and "unknown stage 'catalog'" in problems[1]
    with pytest.raises(ValueError):
        Segment(categories=["shoes"])
