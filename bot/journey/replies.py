"""What the journey says: one method per reply, each the messages (HTML text, keyboard) that answer a
step, composed for the lead as it is once the step is recorded, in the lead's language. A manager's
call or answer is promised as the working hours allow («в течение 15 минут», «завтра после 9:00»)."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiogram.types import ReplyKeyboardRemove
from babel.lists import format_list

from bot import keyboards
from bot.db.base import utcnow
from bot.db.models import Lead
from bot.hours import ALWAYS, WorkingHours
from bot.journey.keyboards import quiz_options
from bot.quiz import Quiz
from bot.texts import Safe, t

Outgoing = tuple[str, Any]  # (HTML text, reply markup or None)
#: A step's answer: the messages to send ``lead``.
Reply = Callable[[Lead], list[Outgoing]]

CALLBACK_MINUTES = 15  # a manager calls back (the CRM's callback task has the same deadline)
TEST_BATCH_MINUTES = 30  # a manager contacts the buyer about a test batch (the CRM task's deadline)


class Replies:
    def __init__(self, quiz: Quiz, hours: WorkingHours = ALWAYS, clock: Callable[[], datetime] = utcnow) -> None:
        self.quiz = quiz
        self.hours = hours
        self.clock = clock  # replaceable (tests promise at night)

    # ------------------------------------------------------------- arrival
    def greeting(self, lead: Lead) -> list[Outgoing]:
        text = t(lead.language, "journey.greeting", hello=self._hello(lead, "hello"), interests=self._interests(lead))
        return [(text, keyboards.next_steps(lead.language))]

    def welcome_back(self, lead: Lead) -> list[Outgoing]:
        return [(t(lead.language, "journey.welcome_back", hello=self._hello(lead, "hello_back")), keyboards.next_steps(lead.language))]

    def cold_intro(self, lead: Lead, *, returning: bool) -> list[Outgoing]:
        """No quiz answers yet: the intro (share your phone, or answer the quiz) and the current question."""
        hello = self._hello(lead, "hello_back" if returning else "hello")
        return [(t(lead.language, "journey.cold_intro", hello=hello), keyboards.share_phone(lead.language)), self.question(lead)]

    # ---------------------------------------------------------------- quiz
    def question(self, lead: Lead) -> Outgoing:
        """The current quiz question of ``lead`` with its keyboard."""
        index, picked = lead.flow.get("index", 0), lead.flow.get("picked", [])
        question = self.quiz.questions[index]
        lang = lead.language
        text = t(lang, "journey.quiz_question", number=index + 1, total=len(self.quiz.questions), question=question.label(lang))
        if question.type == "text":
            return text + "\n" + t(lang, "journey.quiz_text_hint"), None
        if question.type == "multi":
            text += "\n" + t(lang, "journey.quiz_multi_hint")
        return text, quiz_options(question, lang, picked)

    def next_question(self, lead: Lead) -> list[Outgoing]:
        return [self.question(lead)]

    def quiz_done(self, lead: Lead) -> list[Outgoing]:
        return [(t(lead.language, "journey.quiz_done", interests=self._interests(lead)), keyboards.next_steps(lead.language))]

    # --------------------------------------------------------------- phone
    def phone_found(self, lead: Lead) -> list[Outgoing]:
        """The shared phone found the buyer's website quiz: greet them with it."""
        return [(t(lead.language, "journey.phone_found"), ReplyKeyboardRemove()), *self.greeting(lead)]

    def phone_saved(self, lead: Lead) -> list[Outgoing]:
        said = [(t(lead.language, "journey.phone_saved", phone=lead.phone), ReplyKeyboardRemove())]
        return said + [self.question(lead)] if lead.flow.get("step") == "quiz" else said

    def phone_not_own(self, lead: Lead) -> list[Outgoing]:
        return self._asking_phone(lead, "phone_not_own")

    def phone_invalid(self, lead: Lead) -> list[Outgoing]:
        return self._asking_phone(lead, "phone_invalid")

    # ---------------------------------------------------------- next steps
    def callback_confirmed(self, lead: Lead) -> list[Outgoing]:
        return [(t(lead.language, "journey.callback_confirmed", phone=lead.phone, when=self._when(lead, CALLBACK_MINUTES)), ReplyKeyboardRemove())]

    def callback_need_phone(self, lead: Lead) -> list[Outgoing]:
        text = t(lead.language, "journey.callback_need_phone", when=self._when(lead, CALLBACK_MINUTES))
        return [(text, keyboards.share_phone(lead.language))]

    def question_prompt(self, lead: Lead) -> list[Outgoing]:
        return [(t(lead.language, "journey.question_prompt"), None)]

    def question_received(self, lead: Lead) -> list[Outgoing]:
        return [(t(lead.language, "journey.question_received"), None)]

    # ---------------------------------------------------------- test batch
    def test_ask_assortment(self, lead: Lead) -> list[Outgoing]:
        return [(t(lead.language, "journey.test_ask_assortment"), None)]

    def test_ask_city(self, lead: Lead) -> list[Outgoing]:
        return [(t(lead.language, "journey.test_ask_city"), None)]

    def test_ask_phone(self, lead: Lead) -> list[Outgoing]:
        return self._asking_phone(lead, "test_ask_phone")

    def test_confirmed(self, lead: Lead, *, assortment: str, city: str, phone: str) -> list[Outgoing]:
        text = t(lead.language, "journey.test_confirmed", assortment=assortment, city=city, phone=phone,
                 when=self._when(lead, TEST_BATCH_MINUTES))
        return [(text, ReplyKeyboardRemove())]

    # ------------------------------------------------------------- helpers
    def _hello(self, lead: Lead, key: str) -> Safe:
        name = lead.first_name
        return Safe(t(lead.language, f"journey.{key}_named", name=name) if name else t(lead.language, f"journey.{key}"))

    def _when(self, lead: Lead, minutes: int) -> str:
        return self.hours.answer_by(self.clock(), minutes, lead.language)

    def _interests(self, lead: Lead) -> Safe:
        """The answers as a phrase: «вас интересуют обувь и аксессуары, объём закупки — 100–300 тыс ₽, город
        доставки — Казань» (the city and the volume not as choices); every answer when none of those is known."""
        lang, interests = lead.language, lead.interests
        categories = [_lower_first(label) for label in self.quiz.labels_of("category", interests, lang)]
        parts = [t(lang, "journey.summary_category" if len(categories) == 1 else "journey.summary_categories",
                   categories=format_list(categories, locale=lang))] if categories else []
        parts += [t(lang, f"journey.summary_{key}", value=", ".join(labels))
                  for key in ("volume", "city") if (labels := self.quiz.labels_of(key, interests, lang))]
        return Safe(", ".join(parts)) if parts else Safe(t(lang, "journey.summary_answers", answers=", ".join(
            self.quiz.describe(interests, lang))))

    @staticmethod
    def _asking_phone(lead: Lead, key: str) -> list[Outgoing]:
        return [(t(lead.language, f"journey.{key}"), keyboards.share_phone(lead.language))]


def _lower_first(label: str) -> str:
    """«Обувь» → «обувь» inside a sentence; «ТВ и аудио» stays as it is."""
    return label[:1].lower() + label[1:] if label[1:2].islower() else label
