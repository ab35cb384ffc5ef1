"""Buttons every feature may show a buyer (next steps, test batch, share phone); the journey's router handles them."""
from __future__ import annotations

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, KeyboardButton, ReplyKeyboardMarkup

from bot.texts import t


class ActionCb(CallbackData, prefix="act"):
    """A next-step button: catalog, price_list, callback, question, test."""

    action: str


def _button(lang: str, key: str, action: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=t(lang, f"journey.buttons.{key}"), callback_data=ActionCb(action=action).pack())


def next_steps(lang: str) -> InlineKeyboardMarkup:
    """Send the catalogue / the Excel price list / call me back / ask a question."""
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [_button(lang, "catalog", "catalog"), _button(lang, "price_list", "price_list")],
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
