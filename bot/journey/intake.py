"""Website quiz intake: a Marquiz submission becomes a lead and a single-use start link."""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import leads, submissions
from bot.db.base import utcnow
from bot.db.models import QUIZ, Lead, QuizSubmission
from bot.funnel import advance
from bot.bodies import Body
from bot.journal import LEAD_CREATED, QUIZ_COMPLETED, Journal
from bot.journey.identity import split_name
from bot.journey.marquiz import MarquizSubmission, parse_submission
from bot.quiz import Quiz

log = structlog.get_logger(__name__)

TOKEN_PREFIX = "q_"


def new_start_token() -> str:
    """An unguessable deep-link payload: ``q_`` + 32 url-safe characters (≤ 64, ``[A-Za-z0-9_-]``)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Intake:
    lead_id: int
    token: str
    duplicate: bool


class IntakeService:
    def __init__(self, db: async_sessionmaker[AsyncSession], journal: Journal, quiz: Quiz, default_language: str) -> None:
        self.db = db
        self.journal = journal
        self.quiz = quiz
        self.default_language = default_language

    async def accept_marquiz(self, body: Body) -> Intake:
        """Store a Marquiz webhook idempotently; raises ``BadPayload`` for anything else.

        Submissions with one phone take turns (:func:`leads.lock_phone`), so a burst of them makes one lead.
        """
        submission = parse_submission(body.data)
        try:
            return await self._store(submission, body)
        except IntegrityError:  # the same submission raced in twice: the first one won
            async with self.db() as session:
                existing = await submissions.by_key(session, submission.idempotency_key)
                if existing is None:
                    raise
                return Intake(existing.lead_id, existing.token or "", duplicate=True)

    async def _store(self, submission: MarquizSubmission, body: Body) -> Intake:
        match = self.quiz.match_answers(submission.answers)
        async with self.db.begin() as session:
            if submission.phone:
                await leads.lock_phone(session, submission.phone)
            existing = await submissions.by_key(session, submission.idempotency_key)
            if existing is not None:
                return Intake(existing.lead_id, existing.token or "", duplicate=True)
            lead = await leads.latest_by_phone(session, submission.phone) if submission.phone else None
            created = lead is None
            if lead is None:
                first, last = split_name(submission.name)
                lead = Lead(first_name=first, last_name=last, language=submission.language or self.default_language, arrival=QUIZ)
                session.add(lead)
            lead.phone = submission.phone or lead.phone
            lead.email = submission.email or lead.email
            lead.interests = {**lead.interests, **match.interests}
            lead.source = lead.source or submission.source
            lead.utm = lead.utm or submission.utm
            lead.quiz_completed_at = utcnow()
            advance(lead, "qualified")
            await session.flush()
            token = new_start_token()
            session.add(
                QuizSubmission(
                    source="marquiz", idempotency_key=submission.idempotency_key, token=token,
                    raw_body=body.text, content_type=body.content_type,
                    answers=match.interests, unknown=match.unknown, phone=submission.phone, lead_id=lead.id,
                )
            )
            if created:
                await self.journal.event(session, lead, LEAD_CREATED, via="marquiz", quiz_id=submission.quiz_id, utm=submission.utm)
            await self.journal.event(
                session, lead, QUIZ_COMPLETED, via="marquiz", interests=match.interests, unknown=match.unknown,
                answers=[{"q": q, "a": a} for q, a in submission.answers],
            )
        if match.unknown:
            log.warning("marquiz.unknown_answers", lead_id=lead.id, unknown=json.dumps(match.unknown, ensure_ascii=False))
        log.info("marquiz.accepted", lead_id=lead.id, new_lead=created, interests=match.interests)
        return Intake(lead.id, token, duplicate=False)
