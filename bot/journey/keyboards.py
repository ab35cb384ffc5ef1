"""The in-bot quiz's keyboard; callback data is typed with aiogram's CallbackData."""
from __future__ import annotations

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot.quiz import Question
from bot.texts import t


class QuizCb(CallbackData, prefix="quiz"):
    """A quiz answer: ``option`` is an option key, or ``"_done"`` to confirm a multi-select."""

    question: str
    option: str


DONE = "_done"


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
