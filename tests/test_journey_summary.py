"""The greeting's summary of the quiz answers reads as a sentence: the city and the budget are not "choices"."""
from __future__ import annotations

from bot.config import DEFAULT_QUIZ
from bot.db.models import Lead
from bot.journey.replies import Replies
from bot.quiz import load_quiz

REPLIES = Replies(load_quiz(DEFAULT_QUIZ))


def greeting(language: str, **interests: object) -> str:
    lead = Lead(first_name="Анна", language=language, interests=interests)
    return REPLIES.greeting(lead)[0][0]


def test_the_answers_are_phrased_naturally() -> None:
    text = greeting("ru", category=["shoes", "accessories"], volume="100to300k", channel="marketplaces", city="Казань")
    assert text.startswith("Анна, здравствуйте! Спасибо за ответы: вас интересуют обувь и аксессуары, "
                           "объём закупки 100–300 тыс ₽, город доставки — Казань.\n\n")
    assert "Вы выбрали" not in text
    three = greeting("ru", category=["women", "kids", "shoes"])
    assert "вас интересуют женская одежда, детская одежда и обувь." in three
    english = greeting("en", category=["shoes", "accessories"], volume="over1m", city="Kazan")
    assert "you are interested in shoes and accessories, purchase volume over 1M ₽, delivery city Kazan." in english


def test_a_buyers_city_is_escaped_and_other_answers_shown_when_nothing_else_is_known() -> None:
    assert "город доставки — &lt;b&gt;Казань&lt;/b&gt;." in greeting("ru", city="<b>Казань</b>")
    assert "Спасибо за ответы: Маркетплейсы." in greeting("ru", channel="marketplaces")
