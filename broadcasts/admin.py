"""Admin UI in Telegram (ADMIN_IDS only, in a private chat or an admin group).

``/broadcast``: audience (a preset from BROADCAST_SEGMENTS or toggles, with the live size) →
the content (any message, copied; text and captions personalised) → buttons → a preview
sent to the admin plus the full validation → now or at a time → confirm. The wizard's
message then becomes the live progress message. ``/broadcasts``: recent ones with stats.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from aiogram import F, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command, Filter
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from pydantic import ValidationError

from bot.config import Settings
from bot.funnel import STAGES
from bot.texts import plural, t
from broadcasts import stats
from broadcasts.campaigns import CampaignSpec
from broadcasts.content import Button, Content, Variant
from broadcasts.markup import plain
from broadcasts.models import SENT
from broadcasts.progress import ControlCb, controls
from broadcasts.schedule import parse_when
from broadcasts.segments import Recipient, Segment
from broadcasts.service import Broadcasts

VARIABLES = "{{ first_name }}, {{ name }}, {{ company }}, {{ city }}, {{ categories }}, {{ volume }}"
TOGGLES = ("category", "volume", "stage")
FLAGS = {"catalog_sent": "catalog_flag", "test_batch_requested": "test_flag"}
MARKETING_STAGES = STAGES[:4]  # new … test_batch_sent


class Wizard(StatesGroup):
    audience = State()
    content = State()
    buttons = State()
    button_url = State()
    review = State()
    when = State()
    confirm = State()


class WizardCb(CallbackData, prefix="bw"):
    op: str
    arg: str = ""


class IsAdmin(Filter):
    """The update comes from one of ADMIN_IDS."""

    async def __call__(self, event: Message | CallbackQuery, settings: Settings) -> bool:
        return event.from_user is not None and event.from_user.id in settings.admin_ids


def _cb(text: str, op: str, arg: str = "") -> InlineKeyboardButton:
    return InlineKeyboardButton(text=text, callback_data=WizardCb(op=op, arg=arg).pack())


def _presets(settings: Settings) -> list[dict[str, Any]]:
    path = Path(settings.broadcast_segments)
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("presets", []) if path.exists() else []


def _label(text: Any, lang: str) -> str:
    return (text.get(lang) or next(iter(text.values()))) if isinstance(text, dict) else str(text)


# ------------------------------------------------------------------- audience
async def _audience(broadcasts: Broadcasts, settings: Settings, segment: dict[str, Any]) -> tuple[str, InlineKeyboardMarkup]:
    lang, quiz = settings.default_language, broadcasts.renderer.quiz
    preview = await broadcasts.campaigns.preview(Segment(**segment), 3)
    names = ", ".join(" ".join(p for p in (r.first_name, r.last_name) if p) or f"#{r.id}" for r in preview.sample)
    text = t(lang, "broadcasts.admin.audience", size=preview.recipients, sample=t(lang, "broadcasts.admin.sample", names=names) if names else "")
    rows = [[_cb(_label(p["name"], lang), "preset", str(i))] for i, p in enumerate(_presets(settings))]
    for key in TOGGLES:
        options = [(o.key, o.label(lang)) for o in quiz.question(key).options] if key != "stage" else [(s, t(lang, f"broadcasts.stages.{s}")) for s in MARKETING_STAGES]
        buttons = [_cb(("✅ " if value in segment.get(key, []) else "") + label, key, value) for value, label in options]
        rows += [buttons[i:i + 3] for i in range(0, len(buttons), 3)]
    flag = lambda value: t(lang, "broadcasts.admin." + {None: "flag_any", True: "flag_yes", False: "flag_no"}[value])  # noqa: E731
    rows.append([_cb(t(lang, f"broadcasts.admin.{label}", value=flag(segment.get(key))), "flag", key) for key, label in FLAGS.items()])
    rows.append([_cb(t(lang, "broadcasts.admin.abort"), "abort"), _cb(t(lang, "broadcasts.admin.next"), "next")])
    return text, InlineKeyboardMarkup(inline_keyboard=rows)


async def start(message: Message, state: FSMContext, broadcasts: Broadcasts, settings: Settings) -> None:
    await state.clear()
    await state.set_state(Wizard.audience)
    text, markup = await _audience(broadcasts, settings, {})
    panel = await message.answer(text, reply_markup=markup)
    await state.update_data(segment={}, panel=panel.message_id)


async def audience(query: CallbackQuery, callback_data: WizardCb, state: FSMContext, broadcasts: Broadcasts, settings: Settings) -> None:
    lang, op, arg = settings.default_language, callback_data.op, callback_data.arg
    segment: dict[str, Any] = (await state.get_data())["segment"]
    if op == "next":
        if (await broadcasts.campaigns.preview(Segment(**segment), 0)).recipients == 0:
            await query.answer(t(lang, "broadcasts.admin.empty"), show_alert=True)
            return
        await state.set_state(Wizard.content)
        await query.message.edit_text(t(lang, "broadcasts.admin.ask_content", variables=VARIABLES))
        await query.answer()
        return
    if op == "preset":
        segment = dict(_presets(settings)[int(arg)].get("segment") or {})
    elif op in TOGGLES:
        values = segment.get(op, [])
        segment[op] = [v for v in values if v != arg] if arg in values else [*values, arg]
    elif op == "flag":
        segment[arg] = {None: True, True: False, False: None}[segment.get(arg)]
    await state.update_data(segment={key: value for key, value in segment.items() if value not in (None, [])})
    text, markup = await _audience(broadcasts, settings, (await state.get_data())["segment"])
    await query.message.edit_text(text, reply_markup=markup)
    await query.answer()


# -------------------------------------------------------------------- content
def capture(message: Message) -> dict[str, Any]:
    """The admin's message as a variant: text and captions keep their HTML (and can be personalised)."""
    if message.text:
        return {"text": message.html_text}
    caption = message.html_text if message.caption else None
    for kind in ("photo", "animation", "video", "document"):
        media = getattr(message, kind)
        if media:
            return {kind: (media[-1] if kind == "photo" else media).file_id, "text": caption}
    return {"copy_of": {"chat_id": message.chat.id, "message_id": message.message_id}}


def _buttons_panel(lang: str, buttons: list[dict[str, Any]]) -> tuple[str, InlineKeyboardMarkup]:
    listed = "\n".join(f"• {_label(b['text'], lang)}" + (f" → {b['url']}" if b.get("url") else "") for b in buttons)
    rows = [
        [_cb(t(lang, "broadcasts.admin.add_test"), "add", "test"), _cb(t(lang, "broadcasts.admin.add_catalog"), "add", "catalog")],
        [_cb(t(lang, "broadcasts.admin.add_url"), "url"), _cb(t(lang, "broadcasts.admin.clear_buttons"), "clear")],
        [_cb(t(lang, "broadcasts.admin.abort"), "abort"), _cb(t(lang, "broadcasts.admin.next"), "next")],
    ]
    return t(lang, "broadcasts.admin.buttons_panel", buttons=listed or t(lang, "broadcasts.admin.no_buttons")), InlineKeyboardMarkup(inline_keyboard=rows)


async def _show_buttons(message: Message, state: FSMContext, lang: str) -> None:
    await state.set_state(Wizard.buttons)
    text, markup = _buttons_panel(lang, (await state.get_data()).get("buttons", []))
    panel = await message.answer(text, reply_markup=markup)
    await state.update_data(panel=panel.message_id)


async def content(message: Message, state: FSMContext, settings: Settings) -> None:
    await state.update_data(variant=capture(message), buttons=[])
    await _show_buttons(message, state, settings.default_language)


async def buttons(query: CallbackQuery, callback_data: WizardCb, state: FSMContext, broadcasts: Broadcasts, settings: Settings) -> None:
    lang, op = settings.default_language, callback_data.op
    if op == "next":
        await query.answer()  # the review checks every recipient: stop the spinner first
        await review(query.message, state, broadcasts, settings, query.from_user.first_name)
        return
    if op == "url":
        await state.set_state(Wizard.button_url)
        await query.message.edit_text(t(lang, "broadcasts.admin.ask_url"))
    else:
        found = (await state.get_data()).get("buttons", [])
        if op == "add":
            label = {language: t(language, f"broadcasts.admin.{callback_data.arg}_button") for language in ("ru", "en")}
            found = [*found, {"text": label, "action": callback_data.arg}]
        elif op == "clear":
            found = []
        await state.update_data(buttons=found)
        text, markup = _buttons_panel(lang, found)
        await query.message.edit_text(text, reply_markup=markup)
    await query.answer()


async def button_url(message: Message, state: FSMContext, settings: Settings) -> None:
    lang = settings.default_language
    label, _, url = (message.text or "").partition("|")
    try:
        button = Button(text=label.strip() or "?", url=url.strip())
    except ValidationError as exc:
        await message.answer(t(lang, "broadcasts.admin.bad_url", error=exc.errors()[0]["msg"]))
        return
    await state.update_data(buttons=[*(await state.get_data()).get("buttons", []), button.model_dump(exclude_none=True)])
    await _show_buttons(message, state, lang)


# --------------------------------------------------------------------- review
def _variant(data: dict[str, Any]) -> Variant:
    return Variant(**data["variant"], buttons=data.get("buttons", []))


async def review(message: Message, state: FSMContext, broadcasts: Broadcasts, settings: Settings, admin_name: str) -> None:
    """Validate the message for every recipient, send the preview to the admin, offer now / schedule."""
    lang, data = settings.default_language, await state.get_data()
    segment, variant = Segment(**data["segment"]), _variant(data)
    await state.set_state(Wizard.content)  # a new message replaces the content unless the review passes
    plan = await broadcasts.campaigns.plan(segment, Content(variants=[variant]))
    if plan.refused:
        await message.answer(t(lang, "broadcasts.admin.problems", failing=plural(lang, "broadcasts.recipients_genitive", plan.failing),
                               problems="\n".join(plan.problems)))
        return
    if plan.skipped:
        await message.answer(t(lang, "broadcasts.admin.skipped", skipped=plural(lang, "broadcasts.recipients_genitive", plan.skipped),
                               problems="\n".join(plan.problems)))
    preview = await broadcasts.campaigns.preview(segment, 1)
    sample = preview.sample[0] if preview.sample else Recipient(0, message.chat.id, admin_name, None, None, None, lang, {}, "new", None)
    try:
        await broadcasts.engine.deliver(variant, sample, 0, chat_id=message.chat.id)
    except TelegramAPIError as exc:
        await message.answer(t(lang, "broadcasts.admin.preview_failed", error=exc.message))
        return
    await state.set_state(Wizard.review)
    name = " ".join(p for p in (sample.first_name, sample.last_name) if p) or f"#{sample.id}"
    rows = [[_cb(t(lang, "broadcasts.admin.send_now"), "now"), _cb(t(lang, "broadcasts.admin.schedule"), "schedule")],
            [_cb(t(lang, "broadcasts.admin.edit"), "edit"), _cb(t(lang, "broadcasts.admin.abort"), "abort")]]
    text = t(lang, "broadcasts.admin.preview", name=name, size=plan.recipients, minutes=max(1, round(plan.seconds / 60)), rate=f"{broadcasts.rate:g}")
    panel = await message.answer(text, reply_markup=InlineKeyboardMarkup(inline_keyboard=rows))
    await state.update_data(panel=panel.message_id, size=plan.recipients)


def _example(settings: Settings, broadcasts: Broadcasts) -> str:
    return (broadcasts.clock() + timedelta(days=1)).astimezone(ZoneInfo(settings.timezone)).strftime("%Y-%m-%d 10:00")


async def decide(query: CallbackQuery, callback_data: WizardCb, state: FSMContext, broadcasts: Broadcasts, settings: Settings) -> None:
    lang, op = settings.default_language, callback_data.op
    if op == "edit":
        await state.set_state(Wizard.content)
        await query.message.edit_text(t(lang, "broadcasts.admin.ask_content", variables=VARIABLES))
    elif op == "schedule":
        await state.set_state(Wizard.when)
        await query.message.edit_text(t(lang, "broadcasts.admin.ask_time", example=_example(settings, broadcasts), zone=settings.timezone))
    elif op == "now":
        await state.update_data(send_at=None)
        await _confirm(query.message, state, broadcasts, settings, edit=True)
    await query.answer()


async def when(message: Message, state: FSMContext, broadcasts: Broadcasts, settings: Settings) -> None:
    try:
        moment = parse_when(message.text or "", settings.timezone)
    except ValueError:
        moment = None
    if moment is None or moment <= broadcasts.clock():
        await message.answer(t(settings.default_language, "broadcasts.admin.bad_time", example=_example(settings, broadcasts)))
        return
    await state.update_data(send_at=moment.isoformat())
    await _confirm(message, state, broadcasts, settings, edit=False)


def _name(data: dict[str, Any], lang: str, broadcasts: Broadcasts) -> str:
    text = plain(_label(data["variant"].get("text") or "", lang)).strip().split("\n")[0]
    return text[:60] or t(lang, "broadcasts.admin.default_name", when=broadcasts.clock().strftime("%d.%m %H:%M"))


async def _confirm(message: Message, state: FSMContext, broadcasts: Broadcasts, settings: Settings, *, edit: bool) -> None:
    lang, data = settings.default_language, await state.get_data()
    await state.set_state(Wizard.confirm)
    name, size = _name(data, lang, broadcasts), plural(lang, "broadcasts.recipients_dative", data["size"])
    if data.get("send_at"):
        moment = datetime.fromisoformat(data["send_at"]).astimezone(ZoneInfo(settings.timezone)).strftime("%d.%m.%Y %H:%M")
        text = t(lang, "broadcasts.admin.confirm_at", name=name, size=size, when=moment, zone=settings.timezone)
    else:
        text = t(lang, "broadcasts.admin.confirm_now", name=name, size=size)
    markup = InlineKeyboardMarkup(inline_keyboard=[[_cb(t(lang, "broadcasts.admin.abort"), "abort"), _cb(t(lang, "broadcasts.admin.confirm"), "confirm")]])
    panel = await (message.edit_text(text, reply_markup=markup) if edit else message.answer(text, reply_markup=markup))
    await state.update_data(panel=panel.message_id)


async def confirm(query: CallbackQuery, state: FSMContext, broadcasts: Broadcasts, settings: Settings) -> None:
    lang, data = settings.default_language, await state.get_data()
    spec = CampaignSpec(name=_name(data, lang, broadcasts), segment=Segment(**data["segment"]), message=_variant(data))
    send_at = datetime.fromisoformat(data["send_at"]) if data.get("send_at") else None
    broadcast_id = await broadcasts.campaigns.create(
        spec, send_at=send_at, created_by=query.from_user.id, progress=(query.message.chat.id, query.message.message_id),
    )
    await state.clear()
    await query.message.edit_text(t(lang, "broadcasts.admin.created", id=broadcast_id))
    await query.answer()


async def abort(query: CallbackQuery, state: FSMContext, settings: Settings) -> None:
    await state.clear()
    await query.message.edit_text(t(settings.default_language, "broadcasts.admin.aborted"))
    await query.answer()


# ---------------------------------------------------------- list & controls
async def recent(message: Message, broadcasts: Broadcasts, settings: Settings) -> None:
    lang = settings.default_language
    found = await broadcasts.campaigns.recent(10)
    if not found:
        await message.answer(t(lang, "broadcasts.admin.list_empty"))
        return
    lines = []
    for b in found:
        s = await broadcasts.campaigns.stats(b.id)
        lines.append(t(lang, "broadcasts.admin.list_line", id=b.id, name=b.name, state=t(lang, f"broadcasts.states.{b.state}"),
                       sent=s.total.states[SENT], recipients=s.total.recipients))
    buttons = [InlineKeyboardButton(text=t(lang, "broadcasts.admin.stats_button", id=b.id), callback_data=ControlCb(action="stats", id=b.id).pack()) for b in found]
    rows = [buttons[i:i + 5] for i in range(0, len(buttons), 5)]
    await message.answer(t(lang, "broadcasts.admin.list", lines="\n".join(lines)), reply_markup=InlineKeyboardMarkup(inline_keyboard=rows))


async def control(query: CallbackQuery, callback_data: ControlCb, broadcasts: Broadcasts, settings: Settings) -> None:
    """Stats, pause, resume, cancel: acts, then shows the broadcast's figures with its controls."""
    lang, action = settings.default_language, callback_data.action
    before = await broadcasts.campaigns.get(callback_data.id)
    if before is None:
        await query.answer(t(lang, "broadcasts.admin.not_found"), show_alert=True)
        return
    if action in ("pause", "resume", "cancel") and not await getattr(broadcasts.campaigns, action)(before.id):
        await query.answer(t(lang, "broadcasts.admin.refused", state=t(lang, f"broadcasts.states.{before.state}")), show_alert=True)
        return
    s = await broadcasts.campaigns.stats(before.id)
    text = stats.report(lang, s, settings.timezone)
    if action == "stats":
        await query.message.answer(text, reply_markup=controls(lang, s.broadcast))
    else:
        await query.message.edit_text(text, reply_markup=controls(lang, s.broadcast))
    await query.answer(t(lang, "broadcasts.admin.done"))


def create_router() -> Router:
    """The admin router (one per dispatcher)."""
    router = Router(name="broadcasts-admin")
    router.message.filter(IsAdmin())
    router.callback_query.filter(IsAdmin())
    router.message.register(start, Command("broadcast"))
    router.message.register(recent, Command("broadcasts"))
    router.callback_query.register(abort, WizardCb.filter(F.op == "abort"))
    router.callback_query.register(audience, Wizard.audience, WizardCb.filter())
    router.message.register(content, Wizard.content, ~F.text.startswith("/"))
    router.callback_query.register(buttons, Wizard.buttons, WizardCb.filter())
    router.message.register(button_url, Wizard.button_url, F.text)
    router.callback_query.register(decide, Wizard.review, WizardCb.filter())
    router.message.register(when, Wizard.when, F.text)
    router.callback_query.register(confirm, Wizard.confirm, WizardCb.filter(F.op == "confirm"))
    router.callback_query.register(control, ControlCb.filter())
    return router
