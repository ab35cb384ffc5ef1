"""The lead journey: greeting, in-bot quiz, phone match, catalogue, callback and test-batch request.

Each step takes plain values (:class:`~bot.inbound.Visitor`, :class:`~bot.inbound.Inbound`), decides in one short
database transaction what to answer (a :data:`~bot.journey.replies.Reply`), then
answers. Nothing slow stands between an update and its reply: rendering runs in a worker
pool after the buyer has been answered, and CRM work only goes into the outbox.
"""
from __future__ import annotations

import contextlib
import time
from datetime import timedelta
from functools import partial
from typing import Any

import structlog
from aiogram.enums import ChatAction
from aiogram.exceptions import TelegramAPIError
from aiogram.types import Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot import keyboards, metrics
from bot.db import leads, submissions
from bot.db.base import utcnow
from bot.db.session import Database
from bot.db.models import AD, COLD, PHONE, Lead, QuizSubmission, TestBatchRequest
from bot.funnel import advance
from bot.hours import ALWAYS, WorkingHours
from bot.journal import (
    CALLBACK_REQUESTED, CATALOG_SENT, GREETED, LEAD_CREATED, PHONE_SHARED, QUESTION_ASKED, QUIZ_COMPLETED,
    RESUBSCRIBED, TEST_BATCH_REQUESTED, Journal,
)
from bot.journey.identity import attach_telegram, merge
from bot.journey.intake import TOKEN_PREFIX
from bot.journey.keyboards import DONE, quiz_options
from bot.journey.replies import Replies, Reply
from bot.inbound import Inbound, Visitor
from bot.messenger import Messenger
from bot.sender import GREETING as GREETING_SEND, Outgoing
from bot.phones import normalise_phone
from bot.ports import BuyerRelay, Catalog
from bot.quiz import Question, Quiz
from bot.texts import t

log = structlog.get_logger(__name__)


def parse_ad_payload(payload: str) -> dict[str, str]:
    """``yandex__cpc__shoes`` → ``{"source": "yandex", "medium": "cpc", "campaign": "shoes"}``."""
    parts = [part for part in payload.split("__") if part][:3]
    return dict(zip(("source", "medium", "campaign"), parts))


class JourneyService:
    def __init__(
        self,
        db: Database,
        journal: Journal,
        messenger: Messenger,
        quiz: Quiz,
        catalog: Catalog,
        *,
        default_language: str = "ru",
        token_ttl: timedelta = timedelta(days=30),
        relay: BuyerRelay | None = None,
        hours: WorkingHours | None = None,
    ) -> None:
        self.db = db
        self.journal = journal
        self.messenger = messenger
        self.quiz = quiz
        self.catalog = catalog
        self.default_language = default_language
        self.token_ttl = token_ttl
        self.relay = relay
        self.replies = Replies(quiz, hours or ALWAYS)

    # ------------------------------------------------------------- plumbing
    async def _lead(self, session: AsyncSession, visitor: Visitor, message: Inbound | None = None, *, known: Lead | None = None) -> Lead:
        """The visitor's lead (``known``, or looked up, or created on first contact), locked;
        ``message`` is logged as inbound."""
        lead = known or await leads.by_tg_user(session, visitor.tg_user_id, for_update=True)
        if lead is None:
            lead = Lead(language=self.default_language, arrival=COLD)
            attach_telegram(lead, visitor)
            session.add(lead)
            await session.flush()
            await self.journal.event(session, lead, LEAD_CREATED, via="telegram")
        if message is not None:
            await self.journal.message(
                session, lead, direction="in", author="buyer", author_name=lead.display_name,
                kind=message.content_type, text=message.text or message.caption,
                tg_chat_id=message.chat_id, tg_message_id=message.message_id, meta=dict(message.attachment),
            )
        return lead

    async def _say(self, lead: Lead, reply: Reply) -> list[Message]:
        """Send what a step decided (through the send outbox), logged."""
        return await self.messenger.say(lead, reply(lead))

    # ------------------------------------------------------------- arrival
    async def start(self, visitor: Visitor, message: Inbound, payload: str | None) -> None:
        """``/start [payload]``: record the visit, then greet.

        The visit (the lead, the website quiz behind the token, the ``/start`` and the greeting event) commits in
        one transaction with the update's handled mark before the greeting goes out: a greeted buyer always has
        a lead, and an update handled again after a crash finds its visit recorded and greets nobody twice.
        """
        began = time.perf_counter()
        lead, staged, first = await self._record_start(visitor, message, payload)
        sent = await self.messenger.deliver(lead, staged, log=False)
        replied = time.perf_counter() - began
        metrics.GREETING.observe(replied)
        reply_ms = round(replied * 1000)

        async def record(session: AsyncSession) -> None:
            if first:  # set before the log's flush: one UPDATE of the lead
                fresh = await session.get(Lead, lead.id)
                fresh.first_reply_ms = reply_ms
            for out in sent:
                await self.messenger.log_out(lead.id, kind="text", text=out.text, tg_message_id=out.message_id, session=session)

        await self.db.together(record)

    def _start_reply(self, lead: Lead, *, returning: bool) -> tuple[str, Reply]:
        """Greeting, welcome back, or the intro and the (next) quiz question; with its name for the records."""
        if lead.interests.get("category"):
            return ("welcome_back", self.replies.welcome_back) if returning else ("greeting", self.replies.greeting)
        if lead.flow.get("step") != "quiz":
            lead.flow = {"step": "quiz", "index": 0, "picked": []}
        return "cold_intro", partial(self.replies.cold_intro, returning=returning)

    async def _record_start(self, visitor: Visitor, message: Inbound, payload: str | None) -> tuple[Lead, list[Outgoing], bool]:
        """Record a ``/start``: claim the token, create or merge the lead, log the message, record the answer in the
        send outbox; the lead, the answer to send, and whether this is the buyer's first greeting. Written together
        with the other buyers' visits of the moment (group commit)."""
        return await self.db.together(partial(self._visit, visitor, message, payload), urgent=True)

    async def _visit(self, visitor: Visitor, message: Inbound, payload: str | None, session: AsyncSession) -> tuple[Lead, list[Outgoing], bool]:
        """:meth:`_record_start`'s work, in ``session``."""
        submission = await self._valid_submission(session, visitor, payload)
        # one read for the user's lead and the quiz's (which _link then finds in the session)
        known, _ = await leads.of_user_or_id(session, visitor.tg_user_id, submission and submission.lead_id, for_update=True)
        returning = bool(known and known.greeted_at)
        if submission is not None:
            await self._link(session, visitor, known, submission)
            if known is None:
                quiz_lead = await session.get(Lead, submission.lead_id)
                known = quiz_lead if quiz_lead is not None and quiz_lead.tg_user_id == visitor.tg_user_id else None
        lead = await self._lead(session, visitor, message, known=known)
        if payload and not payload.startswith(TOKEN_PREFIX):
            utm = parse_ad_payload(payload)
            if lead.arrival == COLD and not lead.source and utm:
                lead.arrival = AD
            lead.source = lead.source or utm.get("source")
            lead.utm = lead.utm or utm
        lead.is_blocked = False
        if lead.unsubscribed_at is not None:
            lead.unsubscribed_at = None
            await self.journal.event(session, lead, RESUBSCRIBED)
        greeting, reply = self._start_reply(lead, returning=returning)
        first = lead.greeted_at is None
        if first:
            lead.greeted_at = utcnow()
            await self.journal.event(session, lead, GREETED, reply=greeting)
        staged = await self.messenger.stage(session, lead, reply(lead), kind=GREETING_SEND)
        return lead, staged, first

    async def _valid_submission(self, session: AsyncSession, visitor: Visitor, payload: str | None) -> QuizSubmission | None:
        """The website quiz behind a start token, if the token is valid for this user."""
        if not payload or not payload.startswith(TOKEN_PREFIX):
            return None
        submission = await submissions.by_token(session, payload)
        if submission is None or submission.created_at < utcnow() - self.token_ttl:
            reason = "unknown or expired"
        elif submission.claimed_by_tg_user_id not in (None, visitor.tg_user_id):
            reason = "claimed by another user"
        else:
            return submission
        log.warning("start.token_rejected", tg_user_id=visitor.tg_user_id, reason=reason)
        return None

    async def _link(self, session: AsyncSession, visitor: Visitor, known: Lead | None, submission: QuizSubmission) -> None:
        """Give the submission's lead this Telegram user, or fold it into the user's existing lead."""
        submission.claimed_by_tg_user_id = visitor.tg_user_id
        submission.claimed_at = submission.claimed_at or utcnow()
        quiz_lead = await session.get(Lead, submission.lead_id)
        if quiz_lead is None or (known is not None and quiz_lead.id == known.id):
            return
        if known is None and quiz_lead.tg_user_id is None:
            attach_telegram(quiz_lead, visitor)
        elif known is not None:
            await merge(session, self.journal, known, quiz_lead)
            known.flow = {}

    # ---------------------------------------------------------------- quiz
    async def quiz_pick(self, visitor: Visitor, message_id: int, question_key: str, option_key: str) -> str | None:
        """A quiz button: toggles a multi-select or records a choice. Returns a callback alert, if any."""
        async with self.db.begin() as session:
            lead = await self._lead(session, visitor)
            flow = lead.flow
            question = self.quiz.question(question_key)
            current = self.quiz.questions[flow.get("index", 0)] if flow.get("step") == "quiz" else None
            if question is None or current is None or current.key != question_key:
                return t(lead.language, "journey.quiz_stale")
            picked: list[str] = list(flow.get("picked", []))
            if option_key == DONE:
                if not picked:
                    return t(lead.language, "journey.quiz_pick_one_first")
                reply = await self._answer(session, lead, question, [o.key for o in question.options if o.key in picked])
            elif question.option(option_key) is None:
                return t(lead.language, "journey.quiz_stale")
            elif question.type == "multi":
                picked.remove(option_key) if option_key in picked else picked.append(option_key)
                lead.flow = {**flow, "picked": picked}
                reply = None
            else:
                reply = await self._answer(session, lead, question, option_key)
        markup = quiz_options(question, lead.language, picked) if reply is None else None
        await self.messenger.bot.edit_message_reply_markup(chat_id=visitor.tg_user_id, message_id=message_id, reply_markup=markup)
        if reply is not None:
            await self._say(lead, reply)
        return None

    async def _answer(self, session: AsyncSession, lead: Lead, question: Question, answer: Any) -> Reply:
        """Store one answer; the next question, or the end of the quiz."""
        lead.interests = {**lead.interests, question.key: answer}
        index = lead.flow.get("index", 0) + 1
        if index < len(self.quiz.questions):
            lead.flow = {"step": "quiz", "index": index, "picked": []}
            return self.replies.next_question
        lead.flow = {}
        lead.quiz_completed_at = utcnow()
        advance(lead, "qualified")
        session.add(
            QuizSubmission(
                source="bot", idempotency_key=f"bot:{lead.id}:{lead.quiz_completed_at.isoformat()}",
                raw_body=repr(lead.interests), answers=lead.interests, phone=lead.phone, lead_id=lead.id,
                claimed_by_tg_user_id=lead.tg_user_id, claimed_at=lead.quiz_completed_at,
            )
        )
        await self.journal.event(session, lead, QUIZ_COMPLETED, via="telegram", interests=lead.interests)
        return self.replies.quiz_done

    # ------------------------------------------------------- free messages
    async def on_message(self, visitor: Visitor, message: Inbound) -> None:
        """Any other private message: a quiz or form answer, or a question for the managers."""
        text = (message.text or "").strip()
        async with self.db.begin() as session:
            lead = await self._lead(session, visitor, message)
            step = lead.flow.get("step")
            if step == "quiz" and text and self.quiz.questions[lead.flow.get("index", 0)].type == "text":
                reply: Reply | None = await self._answer(session, lead, self.quiz.questions[lead.flow["index"]], text[:200])
            elif step == "test" and text:
                reply = await self._test_field(session, lead, text)
            elif step == "phone" and text:
                reply = await self._phone(session, lead, text, typed=True)
            else:
                reply = None
                if lead.awaiting_reply_since is None:
                    lead.awaiting_reply_since = utcnow()
                    reply = self.replies.question_received
                await self.journal.event(session, lead, QUESTION_ASKED, text=(text or message.caption or "")[:500])
        if reply is not None:
            await self._say(lead, reply)
        if step not in ("quiz", "test", "phone") or not text:
            if self.relay is not None:
                await self.relay.forward(lead, message)

    # --------------------------------------------------------------- phone
    async def on_contact(self, visitor: Visitor, message: Inbound) -> None:
        """A shared contact: must be the sender's own; links a website quiz with the same phone."""
        async with self.db.begin() as session:
            lead = await self._lead(session, visitor, message)
            if message.contact_user_id != visitor.tg_user_id:
                reply = self.replies.phone_not_own
            else:
                reply = await self._phone(session, lead, message.contact_phone, typed=False)
        await self._say(lead, reply)
        if self.relay is not None:  # managers see shared contacts too
            await self.relay.forward(lead, message)

    async def _phone(self, session: AsyncSession, lead: Lead, raw: str, *, typed: bool) -> Reply:
        """A phone the buyer shared (their own contact) or ``typed``. Only a shared contact links the website quiz
        with that phone: anyone can type anyone's number, so a typed one is kept as what the buyer told us."""
        phone = normalise_phone(raw)
        if phone is None:
            return self.replies.phone_invalid
        if lead.flow.get("step") == "test" and lead.flow.get("field") == "phone":
            return await self._test_field(session, lead, phone, typed=typed)
        lead.phone, lead.phone_typed = phone, typed
        await self.journal.event(session, lead, PHONE_SHARED, phone=phone, typed=typed)
        if not typed and not lead.interests.get("category"):
            submission = await submissions.unclaimed_by_phone(session, phone, utcnow() - self.token_ttl)
            if submission is not None:
                await self._link(session, Visitor(lead.tg_user_id), lead, submission)
                if lead.arrival in (None, COLD):
                    lead.arrival = PHONE
                return self.replies.phone_found
        if lead.flow.get("step") == "phone":
            lead.flow = {}
            await self.journal.event(session, lead, CALLBACK_REQUESTED, phone=phone)
            return self.replies.callback_confirmed
        return self.replies.phone_saved

    # ---------------------------------------------------------- next steps
    async def action(self, visitor: Visitor, action: str) -> None:
        """A next-step button: ``catalog``, ``price_list``, ``callback``, ``question`` or ``test``."""
        async with self.db.begin() as session:
            lead = await self._lead(session, visitor)
            reply = None
            if action == "callback" and lead.phone:
                await self.journal.event(session, lead, CALLBACK_REQUESTED, phone=lead.phone)
                reply = self.replies.callback_confirmed
            elif action == "callback":
                lead.flow = {"step": "phone", "purpose": "callback"}
                reply = self.replies.callback_need_phone
            elif action == "question":
                reply = self.replies.question_prompt
            elif action == "test":
                lead.flow = {"step": "test", "field": "assortment", "data": {}}
                reply = self.replies.test_ask_assortment
        if action == "catalog":
            await self.send_catalog(lead)
        elif action == "price_list":
            await self.send_price_list(lead)
        elif reply is not None:
            await self._say(lead, reply)

    def _caption(self, lead: Lead) -> str:
        lang = lead.language
        categories = self.quiz.labels_of("category", lead.interests, lang)
        volume = self.quiz.labels_of("volume", lead.interests, lang)
        if categories and volume:
            return t(lang, "journey.catalog_caption", categories=", ".join(categories), volume=volume[0])
        return t(lang, "journey.catalog_caption_all")

    async def send_catalog(self, lead: Lead) -> None:
        """Render (or reuse) the personal catalogue, send it, record the event, offer the test batch."""
        with contextlib.suppress(TelegramAPIError):  # only a hint that a file is coming: never worth failing for
            await self.messenger.bot.send_chat_action(lead.tg_user_id, ChatAction.UPLOAD_DOCUMENT)
        try:
            await self.catalog.send(lead, lambda document: self.messenger.send_document(lead, document, caption=self._caption(lead)))
        except Exception:
            log.exception("catalog.failed", lead_id=lead.id)
            await self.messenger.send_text(lead, t(lead.language, "journey.catalog_failed"))
            raise
        async with self.db.begin() as session:
            fresh = await session.get(Lead, lead.id)
            fresh.catalog_sent_at = utcnow()
            advance(fresh, "catalog_sent")
            await self.journal.event(session, fresh, CATALOG_SENT)
        await self.send_price_list(lead)
        await self.messenger.send_text(lead, t(lead.language, "journey.test_offer"), reply_markup=keyboards.test_offer(lead.language))

    async def send_price_list(self, lead: Lead) -> None:
        """The XLSX price list at the buyer's tier (after the PDF, or on its button); a failure is logged and told."""
        try:
            await self.catalog.send_price_list(lead, lambda document: self.messenger.send_document(
                lead, document, caption=t(lead.language, "journey.price_list_caption")))
        except Exception:
            log.exception("catalog.price_list_failed", lead_id=lead.id)
            await self.messenger.send_text(lead, t(lead.language, "journey.catalog_failed"))

    # ---------------------------------------------------------- test batch
    async def _test_field(self, session: AsyncSession, lead: Lead, value: str, *, typed: bool = True) -> Reply:
        """Store one field of the test-batch form; ask the next missing one or record the request (a phone is
        ``typed`` unless it came as the buyer's own contact)."""
        data = dict(lead.flow.get("data", {}))
        field_name = lead.flow.get("field")
        if field_name == "phone":
            phone = normalise_phone(value)
            if phone is None:
                return self.replies.phone_invalid
            lead.phone = data["phone"] = phone
            lead.phone_typed = typed
        else:
            data[field_name] = value[:1000]
        city = data.get("city") or lead.interests.get("city")
        phone = data.get("phone") or lead.phone
        if not city or not phone:
            missing = "city" if not city else "phone"
            lead.flow = {"step": "test", "field": missing, "data": data}
            return self.replies.test_ask_city if missing == "city" else self.replies.test_ask_phone
        lead.flow = {}
        request = TestBatchRequest(lead_id=lead.id, assortment=data.get("assortment", ""), city=city, phone=phone)
        session.add(request)
        lead.test_batch_requested_at = utcnow()
        await session.flush()
        details = {"assortment": request.assortment, "city": city, "phone": phone}
        await self.journal.event(session, lead, TEST_BATCH_REQUESTED, request_id=request.id, **details)
        return partial(self.replies.test_confirmed, **details)
