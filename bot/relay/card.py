"""What managers see of a lead: the topic name, the lead card and its buttons.

Every buyer value goes through :func:`bot.texts.t`, which HTML-escapes it; topic names are
plain text (Telegram shows them literally), so they are only trimmed to 128 characters.
"""
from __future__ import annotations

import hashlib

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot.db.models import Lead
from bot.funnel import CLOSED, STAGES
from bot.quiz import Quiz
from bot.relay.config import Roster
from bot.texts import Safe, t

#: The reminder picker («Напомнить клиенту…»): reasons (texts ``relay.remind.reasons.*``) and times as ``/remind`` takes them.
REMIND_REASONS = ("payment", "passport", "documents")
REMIND_TIMES = {"2h": "+2h", "tomorrow": "tomorrow 10:00", "3d": "+3d", "7d": "+7d"}
TOPIC_NAME_LIMIT = 128
TOPIC_COLOR = 0x6FB9F0
UTM_ORDER = ("source", "medium", "campaign", "name", "content", "term")  # JSONB keeps no key order


class RelayCb(CallbackData, prefix="rl"):
    """A lead card button: ``catalog``, ``phone``, ``stages``, ``stage`` (with ``stage``), ``back``,
    ``close``, ``reopen``, ``ban``, ``unban``, ``remind``; the reminder picker's ``remind_what`` (``stage``: the
    reason), ``remind_when`` (``stage``: ``reason|time``) and ``remind_back``."""

    action: str
    lead: int
    stage: str = ""


def lead_name(lead: Lead, lang: str) -> str:
    """The buyer's name as managers know them."""
    return " ".join(part for part in (lead.first_name, lead.last_name) if part) or (
        f"@{lead.tg_username}" if lead.tg_username else t(lang, "relay.unnamed", id=lead.id)
    )


def stage_label(stage: str, lang: str) -> str:
    return t(lang, f"relay.stages.{stage}") if stage in STAGES + CLOSED else stage


def mark(lead: Lead, lang: str) -> str:
    """The status mark in front of the topic name."""
    key = "banned" if lead.is_banned else "blocked" if lead.is_blocked else lead.stage
    return t(lang, f"relay.marks.{key}") if key in (*STAGES, *CLOSED, "banned", "blocked") else "•"


def topic_name(lead: Lead, quiz: Quiz, lang: str) -> str:
    """«🟡 Анна Петрова · Обувь · Казань» (plain text, at most 128 characters)."""
    parts = [lead_name(lead, lang), ", ".join(quiz.labels_of("category", lead.interests, lang)), lead.interests.get("city") or ""]
    name = f"{mark(lead, lang)} " + " · ".join(str(part) for part in parts if part)
    name = " ".join(name.split())  # no line breaks in a topic name
    return name if len(name) <= TOPIC_NAME_LIMIT else name[: TOPIC_NAME_LIMIT - 1] + "…"


def card_text(lead: Lead, *, quiz: Quiz, roster: Roster, lang: str, crm_url: str | None, closed: bool) -> str:
    """The lead card (HTML): who, contacts, quiz answers, source, stage, manager, amoCRM."""
    lines = [t(lang, "relay.card.name", name=lead_name(lead, lang))
             + (t(lang, "relay.card.username", username=lead.tg_username) if lead.tg_username else "")]
    if lead.phone:
        lines.append(t(lang, "relay.card.phone", phone=lead.phone))
    if lead.company:
        lines.append(t(lang, "relay.card.company", company=lead.company))
    answers = quiz.describe(lead.interests, lang)
    if answers:
        lines.append(t(lang, "relay.card.answers", answers=", ".join(answers)))
    if lead.source:
        lines.append(t(lang, "relay.card.source", source=lead.source))
    if lead.utm:
        keys = sorted(lead.utm, key=lambda key: (UTM_ORDER.index(key) if key in UTM_ORDER else len(UTM_ORDER), key))
        lines.append(t(lang, "relay.card.utm", utm=", ".join(f"{key}={lead.utm[key]}" for key in keys)))
    lines.append(t(lang, "relay.card.stage", stage=stage_label(lead.stage, lang)))
    operator = roster.by_crm(lead.responsible_user_id)
    manager = operator.name if operator else str(lead.responsible_user_id) if lead.responsible_user_id else t(lang, "relay.card.nobody")
    lines.append(t(lang, "relay.card.responsible", manager=manager))
    if lead.crm_lead_id and crm_url:
        lines.append(t(lang, "relay.card.crm_link", url=f"{crm_url}/leads/detail/{lead.crm_lead_id}", id=lead.crm_lead_id))
    elif lead.crm_lead_id:
        lines.append(t(lang, "relay.card.crm_id", id=lead.crm_lead_id))
    else:
        lines.append(t(lang, "relay.card.crm_none"))
    for flag, on in (("blocked", lead.is_blocked), ("banned", lead.is_banned), ("closed", closed)):
        if on:
            lines.append(t(lang, f"relay.card.{flag}"))
    return "\n".join(lines)


def _button(lang: str, key: str, lead: Lead, action: str, stage: str = "") -> InlineKeyboardButton:
    return InlineKeyboardButton(text=t(lang, f"relay.buttons.{key}"), callback_data=RelayCb(action=action, lead=lead.id, stage=stage).pack())


def card_keyboard(lead: Lead, lang: str, *, closed: bool) -> InlineKeyboardMarkup:
    """Catalogue again / ask for a phone / stage / close or reopen / ban or unban / remind the buyer."""
    return InlineKeyboardMarkup(inline_keyboard=[
        [_button(lang, "catalog", lead, "catalog"), _button(lang, "phone", lead, "phone")],
        [_button(lang, "stage", lead, "stages"),
         _button(lang, "reopen", lead, "reopen") if closed else _button(lang, "close", lead, "close"),
         _button(lang, "unban", lead, "unban") if lead.is_banned else _button(lang, "ban", lead, "ban")],
        [_button(lang, "remind", lead, "remind")],
    ])


def remind_keyboard(lead: Lead, lang: str, reason: str | None = None) -> InlineKeyboardMarkup:
    """The reminder picker: what (a reason), then when (``reason`` chosen)."""
    if reason is None:
        rows = [[InlineKeyboardButton(text=t(lang, f"relay.remind.reasons.{key}"),
                                      callback_data=RelayCb(action="remind_what", lead=lead.id, stage=key).pack())] for key in REMIND_REASONS]
    else:
        buttons = [InlineKeyboardButton(text=t(lang, f"relay.remind.times.{key}"),
                                        callback_data=RelayCb(action="remind_when", lead=lead.id, stage=f"{reason}|{key}").pack())
                   for key in REMIND_TIMES]
        rows = [buttons[:2], buttons[2:], [_button(lang, "back", lead, "remind_back", reason)]]
    return InlineKeyboardMarkup(inline_keyboard=rows)


def stage_keyboard(lead: Lead, lang: str) -> InlineKeyboardMarkup:
    """Every stage (the current one ticked), then «Back»."""
    rows = [
        [InlineKeyboardButton(text=("✔️ " if stage == lead.stage else "") + stage_label(stage, lang),
                              callback_data=RelayCb(action="stage", lead=lead.id, stage=stage).pack())]
        for stage in (*STAGES, *CLOSED)
    ]
    rows.append([_button(lang, "back", lead, "back")])
    return InlineKeyboardMarkup(inline_keyboard=rows)


def fingerprint(name: str, text: str) -> str:
    """What the topic name and card look like (the buttons follow the text), to edit them only on a change."""
    return hashlib.sha256(f"{name}\x00{text}".encode()).hexdigest()


def mention(tg_id: int, name: str, lang: str) -> Safe:
    """A link that notifies the manager (HTML)."""
    return Safe(t(lang, "relay.mention", id=tg_id, name=name))
