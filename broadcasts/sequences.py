"""Warm-up sequences (drip): steps a set time after an entry event, until an exit condition.

* Entry: a journal event kind (``catalog_sent``, ``quiz_completed``…), a stage or a tag the
  lead has when any of its events is recorded.
* Re-entry rule: a lead enters each sequence once. An entry event for a lead who is or was
  enrolled (active, finished or exited) changes nothing, so no step is ever sent twice.
* Steps are due ``delay`` after entry; each has its own segment filter (checked when due: a
  lead who does not match gets the step ``skipped``). A step sends a message through the
  engine (one delivery row per lead: at most once, restarts included) or records a journal
  ``event`` (a task for the CRM).
* Exit: ``replied`` (any buyer message), ``manager`` (a manager message), ``unsubscribed``,
  ``blocked``, a stage reached (funnel order) or an event kind. Exits happen inside the
  transaction of the record that causes them and cancel the lead's steps not yet sent; the
  stage is checked again when a step falls due (amoCRM may have moved it meanwhile).
"""
from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import ConfigError
from bot.db.models import Lead, LeadEvent, Message
from bot.funnel import STAGES
from bot.journal import BLOCKED, UNSUBSCRIBED, Journal, Record
from bot.quiz import Quiz
from bot.texts import LANGUAGES
from broadcasts import store
from broadcasts.content import Content, Renderer, Variant
from broadcasts.models import PENDING, SENT, SKIPPED
from broadcasts.schedule import Clock, parse_duration
from broadcasts.segments import Recipient, Segment, where

REASONS = ("replied", "manager", "unsubscribed", "blocked")


def sample(quiz: Quiz, lang: str) -> Recipient:
    """A demanding sample lead to render every message against: long names, every quiz answer given (all options of a
    multiple choice, the last of a single one)."""
    interests: dict[str, object] = {"city": "Санкт-Петербург"}
    for question in quiz.questions:
        if question.options:
            keys = [option.key for option in question.options]
            interests[question.key] = keys if question.type == "multi" else keys[-1]
    return Recipient(0, 0, "Анна-Мария", "Петрова-Водкина", "ООО «Оптовая торговая компания»", "buyer", lang, interests,
                     "catalog_sent", "yandex")


def reached(stage: str, target: str) -> bool:
    """``stage`` is ``target`` or further down the funnel."""
    if stage in STAGES and target in STAGES:
        return STAGES.index(stage) >= STAGES.index(target)
    return stage == target


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event: str | None = None
    stage: str | None = None
    tag: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Entry:
        if sum(value is not None for value in (self.event, self.stage, self.tag)) != 1:
            raise ValueError("entry needs exactly one of event, stage, tag")
        return self

    def matches(self, lead: Lead, event: LeadEvent) -> bool:
        return (self.event == event.kind) or (self.stage is not None and lead.stage == self.stage) or (self.tag is not None and self.tag in (lead.tags or []))


class Exits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reasons: list[str] = []
    stages: list[str] = []
    events: list[str] = []

    @classmethod
    def parse(cls, items: list[Any]) -> Exits:
        """``[replied, manager, unsubscribed, {stage: test_batch_sent}, {event: test_batch_requested}]``."""
        exits = cls()
        for item in items:
            if isinstance(item, str) and item in REASONS:
                exits.reasons.append(item)
            elif isinstance(item, dict) and len(item) == 1 and next(iter(item)) in ("stage", "event"):
                (exits.stages if "stage" in item else exits.events).append(str(next(iter(item.values()))))
            else:
                raise ValueError(f"unknown exit {item!r}: use {', '.join(REASONS)}, {{stage: …}} or {{event: …}}")
        return exits

    def stage_reason(self, stage: str) -> str | None:
        return next((f"stage:{target}" for target in self.stages if reached(stage, target)), None)


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(pattern=r"^[a-z0-9_]{1,48}$")
    delay: timedelta
    segment: Segment = Segment()
    message: Variant | None = None
    event: str | None = None  # record this journal event instead of sending

    @field_validator("delay", mode="before")
    @classmethod
    def _delay(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, (str, int)) else value

    @model_validator(mode="after")
    def _one(self) -> Step:
        if (self.message is None) == (self.event is None):
            raise ValueError(f"step {self.key}: needs exactly one of message, event")
        return self

    @property
    def content(self) -> Content | None:
        return Content(variants=[self.message]) if self.message else None


class SequenceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(pattern=r"^[a-z0-9_]{1,48}$")
    name: str
    entry: Entry
    exit: Exits = Exits()
    steps: list[Step] = Field(min_length=1)

    @field_validator("exit", mode="before")
    @classmethod
    def _exit(cls, value: Any) -> Any:
        return Exits.parse(value) if isinstance(value, list) else value

    @field_validator("steps")
    @classmethod
    def _ordered(cls, steps: list[Step]) -> list[Step]:
        if len({step.key for step in steps}) != len(steps):
            raise ValueError("step keys must differ")
        return sorted(steps, key=lambda step: step.delay)

    def exit_reason(self, lead: Lead, event: LeadEvent) -> str | None:
        """Why this event ends the lead's enrollment, if it does."""
        kinds = {UNSUBSCRIBED: "unsubscribed", BLOCKED: "blocked"}
        if kinds.get(event.kind) in self.exit.reasons:
            return kinds[event.kind]
        if event.kind in self.exit.events:
            return f"event:{event.kind}"
        return self.exit.stage_reason(lead.stage)


def load_sequences(path: Path, renderer: Renderer) -> list[SequenceSpec]:
    """Read and check the sequences file (every message rendered once against a sample lead)."""
    if not path.exists():
        return []
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        specs = [SequenceSpec(**item) for item in raw.get("sequences", [])]
    except (ValueError, TypeError, yaml.YAMLError) as exc:
        raise ConfigError(f"optobot: {path}: {exc}") from None
    problems = [
        f"{spec.key}.{step.key} ({lang}): {problem}"
        for spec in specs for step in spec.steps if step.message
        for lang in LANGUAGES if (problem := renderer.problem(step.message, sample(renderer.quiz, lang)))
    ]
    if len({spec.key for spec in specs}) != len(specs) or problems:
        raise ConfigError(f"optobot: {path}: " + ("; ".join(problems) or "sequence keys must differ"))
    return specs


class Sequences:
    """Enrollment and exits (a journal subscriber) and the due steps (``enqueue_due``)."""

    def __init__(self, specs: list[SequenceSpec], db: async_sessionmaker[AsyncSession], journal: Journal, clock: Clock) -> None:
        self.specs = specs
        self.db = db
        self.journal = journal
        self.clock = clock
        self._steps: dict[str, dict[str, int]] | None = None  # sequence → step → its broadcast id, once synced

    async def sync(self) -> None:
        """Create or update one broadcast row per step (their deliveries and stats hang off it)."""
        async with self.db.begin() as session:
            for spec in self.specs:
                for step in spec.steps:
                    content = step.content.model_dump() if step.content else {"event": step.event}
                    await store.upsert_step(session, spec.key, step.key, name=f"{spec.name}: {step.key}", segment=step.segment.model_dump(), content=content)
            self._steps = {spec.key: await store.step_ids(session, spec.key) for spec in self.specs}

    async def on_record(self, session: AsyncSession, lead: Lead, record: Record) -> None:
        """Journal subscriber: enter and leave sequences in the transaction of the record."""
        if lead.merged_into_id is not None or not self.specs:
            return
        now = record.created_at
        if isinstance(record, Message):
            reason = "replied" if record.direction == "in" else "manager" if record.author == "manager" and not record.is_internal else None
            if reason is not None:
                await store.exit_sequences(session, lead.id, [s.key for s in self.specs if reason in s.exit.reasons], reason, now)
            return
        for spec in self.specs:
            reason = spec.exit_reason(lead, record)
            if reason is not None:
                await store.exit_sequences(session, lead.id, [spec.key], reason, now)
            elif spec.entry.matches(lead, record):
                await store.enroll(session, spec.key, lead.id, now)

    async def enqueue_due(self) -> None:
        """Give every enrolled lead the steps that fell due: a pending delivery, a skip, or the step's event."""
        if self._steps is None:
            await self.sync()
        now = self.clock()
        for spec in self.specs:
            for step in spec.steps:
                while await self._step_batch(spec, step, now):
                    pass

    async def _step_batch(self, spec: SequenceSpec, step: Step, now: datetime) -> bool:
        """One batch of leads due for ``step``; True if there may be more."""
        step_id = self._steps[spec.key][step.key]
        async with self.db() as session:  # most polls find nothing: look before taking a write transaction
            condition = where(step.segment, session.bind.dialect.name, now)
            dues = await store.due_enrollments(session, spec.key, step_id, now - step.delay, condition)
        if not dues:
            return False
        async with self.db.begin() as session:  # another instance may be here too: inserts are idempotent
            for due in dues:
                reason = spec.exit.stage_reason(due.stage)
                if reason is not None:
                    await store.exit_sequences(session, due.lead_id, [spec.key], reason, now)
                    continue
                state = (SENT if step.event else PENDING) if due.matches else SKIPPED
                variant = step.content.pick(step_id, due.lead_id).name if step.content else "A"
                added = await store.add_delivery(
                    session, broadcast_id=step_id, lead_id=due.lead_id, variant=variant, state=state,
                    due_at=due.entered_at + step.delay, sent_at=now if step.event and due.matches else None,
                )
                if added and step.event and due.matches:
                    lead = await session.get(Lead, due.lead_id)
                    await self.journal.event(session, lead, step.event, sequence=spec.key, step=step.key)
            if step is spec.steps[-1]:
                await store.complete(session, [due.enrollment_id for due in dues])
        return len(dues) == store.DUE_PAGE
