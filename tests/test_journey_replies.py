"""The journey's replies are plain functions of the lead: composed and checked without Telegram."""
from __future__ import annotations

from aiogram.types import InlineKeyboardMarkup, ReplyKeyboardMarkup, ReplyKeyboardRemove

from bot.config import DEFAULT_QUIZ
from bot.db.models import Lead
from bot.inbound import Visitor
from bot.journey.identity import attach_telegram
from bot.journey.replies import Replies
from bot.quiz import load_quiz

REPLIES = Replies(load_quiz(DEFAULT_QUIZ))


def lead(**fields: object) -> Lead:
    return Lead(**{"language": "ru", "interests": {}, "flow": {}, **fields})


def test_a_phone_shared_during_the_quiz_is_confirmed_and_the_quiz_goes_on() -> None:
    mid_quiz = lead(phone="+79123456789", flow={"step": "quiz", "index": 1, "picked": []})
    (saved, remove), (question, options) = REPLIES.phone_saved(mid_quiz)
    assert "+79123456789" in saved and isinstance(remove, ReplyKeyboardRemove)
    assert "Вопрос 2 из" in question and isinstance(options, InlineKeyboardMarkup)
    assert len(REPLIES.phone_saved(lead(phone="+79123456789"))) == 1  # outside the quiz: the confirmation only


def test_a_greeting_names_the_buyer_and_their_answers_and_escapes_them() -> None:
    buyer = lead(first_name="<Анна>", interests={"category": ["shoes"]})
    [(text, markup)] = REPLIES.greeting(buyer)
    assert "&lt;Анна&gt;" in text and "<Анна>" not in text
    assert "вас интересует обувь" in text and isinstance(markup, InlineKeyboardMarkup)


def test_a_cold_start_asks_for_the_phone_then_the_first_question() -> None:
    visitor = Visitor(tg_user_id=42, first_name="Пётр", username="petr")
    buyer = lead(flow={"step": "quiz", "index": 0, "picked": []})
    attach_telegram(buyer, visitor)
    (intro, share), (question, _) = REPLIES.cold_intro(buyer, returning=False)
    assert buyer.tg_user_id == 42 and buyer.tg_username == "petr"
    assert "Пётр" in intro and isinstance(share, ReplyKeyboardMarkup) and share.keyboard[0][0].request_contact
    assert "Вопрос 1 из" in question
