"""Keyboards of the lead journey; callback data is typed with aiogram's CallbackData."""
from __future__ import annotations

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, KeyboardButton, ReplyKeyboardMarkup

from bot.journey.quiz import Question
from bot.texts import t


class ActionCb(CallbackData, prefix="act"):
    """A next-step button: catalog, callback, question, test."""

    action: str


class QuizCb(CallbackData, prefix="quiz"):
    """A quiz answer: ``option`` is an option key, or ``"_done"`` to confirm a multi-select."""

    question: str
    option: str


DONE = "_done"


def _button(lang: str, key: str, action: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=t(lang, f"journey.buttons.{key}"), callback_data=ActionCb(action=action).pack())


def next_steps(lang: str) -> InlineKeyboardMarkup:
    """Send the catalogue / call me back / ask a question."""
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [_button(lang, "catalog", "catalog")],
            [_button(lang, "callback", "callback"), _button(lang, "question", "question")],
        ]
    )


def test_offer(lang: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[[_button(lang, "test_batch", "test")], [_button(lang, "callback", "callback"), _button(lang, "question", "question")]]
    )


def share_phone(lang: str) -> ReplyKeyboardMarkup:
    return ReplyKeyboardMarkup(
        keyboard=[[KeyboardButton(text=t(lang, "journey.buttons.share_phone"), request_contact=True)]],
        resize_keyboard=True,
        one_time_keyboard=True,
    )


def quiz_options(question: Question, lang: str, picked: list[str]) -> InlineKeyboardMarkup:
    """One button per option (a tick on picked ones); a multi-select ends with «Done»."""
    rows = [
        [
            InlineKeyboardButton(
                text=("✅ " if option.key in picked else "") + option.label(lang),
                callback_data=QuizCb(question=question.key, option=option.key).pack(),
            )
        ]
        for option in question.options
    ]
    if question.type == "multi":
        rows.append([InlineKeyboardButton(text=t(lang, "journey.buttons.done"), callback_data=QuizCb(question=question.key, option=DONE).pack())])
    return InlineKeyboardMarkup(inline_keyboard=rows)
