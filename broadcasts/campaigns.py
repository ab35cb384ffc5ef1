"""One-off campaigns: the YAML format, dry-run planning, and the state changes
(draft → scheduled → running ⇄ paused → finished; anything unfinished → cancelled)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.quiz import Quiz
from broadcasts import segments, store
from broadcasts.content import Content, Renderer, Validation, Variant
from broadcasts.models import CANCELLED, DRAFT, PAUSED, RUNNING, SCHEDULED, Broadcast
from broadcasts.schedule import Clock, parse_when
from broadcasts.segments import Recipient, Segment
from broadcasts.stats import Stats, collect


class CampaignError(ValueError):
    """A campaign file that can't be used, with every reason."""


class CampaignSpec(BaseModel):
    """A campaign file: ``name``, ``segment``, ``message`` (or A/B ``variants``), ``holdout``, ``send_at``, ``quiet_hours``."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    segment: Segment = Segment()
    message: Variant | None = None
    variants: list[Variant] | None = None
    winner_by: Literal["clicks", "replies", "conversions"] = "clicks"
    holdout: float = Field(default=0, ge=0, le=50)  # percent of the segment kept out, to measure the broadcast against
    send_at: datetime | str | None = None  # TIMEZONE unless it has an offset; none = now
    quiet_hours: bool = True

    @model_validator(mode="after")
    def _one_body(self) -> CampaignSpec:
        if (self.message is None) == (self.variants is None):
            raise ValueError("give either message or variants")
        return self

    @property
    def content(self) -> Content:
        return Content(variants=self.variants or [self.message], winner_by=self.winner_by, holdout=self.holdout)  # type: ignore[list-item]

    @classmethod
    def load(cls, path: Path) -> CampaignSpec:
        try:
            return cls(**(yaml.safe_load(path.read_text(encoding="utf-8")) or {}))
        except (OSError, yaml.YAMLError) as exc:
            raise CampaignError(f"{path}: {exc}") from None
        except ValidationError as exc:
            raise CampaignError("\n".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None


@dataclass
class Plan:
    """What sending a campaign now would mean: ``refused`` (with ``problems``), or sent to all but ``skipped``."""

    recipients: int
    seconds: float
    failing: int
    skipped: int
    problems: list[str]
    refused: bool


@dataclass
class Preview:
    recipients: int
    sample: list[Recipient]


class Campaigns:
    def __init__(self, db: async_sessionmaker[AsyncSession], renderer: Renderer, quiz: Quiz, *, rate: float, timezone: str, clock: Clock) -> None:
        self.db = db
        self.renderer = renderer
        self.quiz = quiz
        self.rate = rate
        self.timezone = timezone
        self.clock = clock

    async def preview(self, segment: Segment, size: int = 5) -> Preview:
        async with self.db() as session:
            now = self.clock()
            return Preview(await segments.count(session, segment, now), await segments.sample(session, segment, now, size))

    async def plan(self, segment: Segment, content: Content) -> Plan:
        """Dry run: every recipient's messages rendered and checked, the time to send at the configured rate."""
        checked = Validation()
        problems = segment.problems(self.quiz)
        async for page in segments.stream(self.db, segment, self.clock()):
            for r in page:
                checked.check(self.renderer, content, r)
        total = checked.recipients
        return Plan(total, total / self.rate, checked.failing, checked.skipped, problems + checked.problems,
                    bool(problems) or checked.refused)

    async def create(self, spec: CampaignSpec, *, send_at: datetime | None = None, start: bool = True, created_by: int | None = None,
                     progress: tuple[int, int] | None = None) -> int:
        """Store a campaign: ``scheduled`` for ``send_at`` (or its own), running now, or a draft (``start=False``)."""
        when = send_at or (parse_when(spec.send_at, self.timezone) if spec.send_at else None)
        now = self.clock()
        state = DRAFT if not start else SCHEDULED if when and when > now else RUNNING
        broadcast = Broadcast(
            name=spec.name, segment=spec.segment.model_dump(), content=spec.content.model_dump(), send_at=when or now,
            quiet_hours=spec.quiet_hours, state=state, created_by=created_by, started_at=now if state == RUNNING else None,
            progress_chat_id=progress[0] if progress else None, progress_message_id=progress[1] if progress else None,
        )
        async with self.db.begin() as session:
            session.add(broadcast)
            await session.flush()
            return broadcast.id

    async def pause(self, broadcast_id: int) -> bool:
        async with self.db.begin() as session:
            return await store.transition(session, broadcast_id, (RUNNING, SCHEDULED), PAUSED, note="paused by hand")

    async def resume(self, broadcast_id: int) -> bool:
        """Back to running, or to scheduled if it was paused before its time came."""
        async with self.db.begin() as session:
            b = await store.get(session, broadcast_id)
            waiting = b is not None and b.started_at is None and b.send_at is not None and b.send_at > self.clock()
            return await store.transition(session, broadcast_id, (PAUSED,), SCHEDULED if waiting else RUNNING, note=None)

    async def cancel(self, broadcast_id: int) -> bool:
        """Stop for good; deliveries not yet made are cancelled (those under way finish)."""
        async with self.db.begin() as session:
            if not await store.transition(session, broadcast_id, (DRAFT, SCHEDULED, RUNNING, PAUSED), CANCELLED, finished_at=self.clock()):
                return False
            await store.cancel_pending(session, broadcast_id)
            return True

    async def get(self, broadcast_id: int) -> Broadcast | None:
        async with self.db() as session:
            return await store.get(session, broadcast_id)

    async def recent(self, limit: int = 10) -> list[Broadcast]:
        async with self.db() as session:
            return await store.recent(session, limit)

    async def stats(self, broadcast_id: int) -> Stats | None:
        async with self.db() as session:
            broadcast = await store.get(session, broadcast_id)
            return await collect(session, broadcast) if broadcast else None

