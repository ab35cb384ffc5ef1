"""What a broadcast says: variants (A/B) of a jinja2 HTML text, media, buttons; rendering and checks.

Lead values are escaped by jinja2's autoescape, so a buyer named ``<b>&Co`` can never break
the markup. Every message gets an unsubscribe button; action buttons are tracked.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup
from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bot.quiz import Quiz
from bot.texts import t
from broadcasts import markup
from broadcasts.models import HOLDOUT
from broadcasts.segments import Recipient

LocalText = str | dict[str, str]  # one text, or one per language
MEDIA = ("photo", "document", "video", "animation")
ACTIONS = ("catalog", "test", "callback", "question")  # the lead journey's next-step actions
UNSUBSCRIBE = "unsub"
BUYER_TYPED = ("first_name", "last_name", "name", "company", "username", "city")  # template variables a buyer typed
STAND_IN = "Анна"  # a plain value in place of what the buyer typed, to tell a hostile lead from a broken template
MAX_SKIPPED, MAX_SKIPPED_SHARE = 10, 0.1  # recipients a broadcast may skip (see Validation)


class BroadcastCb(CallbackData, prefix="bc"):
    """A tracked button under a message of broadcast ``broadcast`` (0: a preview)."""

    broadcast: int
    action: str


class Button(BaseModel):
    """A URL button or a tracked action button (``catalog``, ``test``, ``callback``, ``question``)."""

    model_config = ConfigDict(extra="forbid")
    text: LocalText
    url: str | None = None
    action: Literal["catalog", "test", "callback", "question"] | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Button:
        if (self.url is None) == (self.action is None):
            raise ValueError("a button needs exactly one of url or action")
        if self.url is not None and not self.url.startswith(("https://", "http://", "tg://")):
            raise ValueError(f"button url must start with https://, http:// or tg:// (got {self.url!r})")
        return self


class CopyOf(BaseModel):
    """A message to copy as it is (content the admin sent to the bot)."""

    chat_id: int
    message_id: int


class Variant(BaseModel):
    """One version of the message. ``text`` is the message, or the caption of the media."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="A", pattern=r"^[A-Za-z0-9_-]{1,16}$")
    weight: float = Field(default=100, gt=0)
    text: LocalText | None = None
    photo: str | None = None  # file_id, URL or local path
    document: str | None = None
    video: str | None = None
    animation: str | None = None
    catalog: bool = False  # the buyer's own PDF catalogue, ``text`` as its caption
    copy_of: CopyOf | None = None
    buttons: list[Button] = []

    @model_validator(mode="after")
    def _shape(self) -> Variant:
        bodies = [kind for kind in (*MEDIA, "catalog", "copy_of") if getattr(self, kind)]
        if len(bodies) > 1:
            raise ValueError(f"one attachment per message, got {', '.join(bodies)}")
        if self.copy_of is not None and self.text is not None:
            raise ValueError("a copied message keeps its own text")
        if not bodies and not self.text:
            raise ValueError("a message needs text or an attachment")
        return self

    @property
    def media(self) -> tuple[str, str] | None:
        """``(kind, file)`` of the photo/document/video/animation, if any."""
        return next(((kind, getattr(self, kind)) for kind in MEDIA if getattr(self, kind)), None)

    @property
    def limit(self) -> int:
        return markup.TEXT_LIMIT if self.media is None and not self.catalog else markup.CAPTION_LIMIT


class Content(BaseModel):
    """All variants of a message, split by ``weight``; the A/B winner is judged ``winner_by``; ``holdout``
    percent of the audience gets nothing (a control group to measure the broadcast against)."""

    model_config = ConfigDict(extra="forbid")
    variants: list[Variant] = Field(min_length=1)
    winner_by: Literal["clicks", "replies", "conversions"] = "clicks"
    holdout: float = Field(default=0, ge=0, le=50)

    @model_validator(mode="after")
    def _names(self) -> Content:
        names = [variant.name for variant in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must differ: {names}")
        if HOLDOUT in names:
            raise ValueError(f"{HOLDOUT!r} names the control group, not a variant")
        return self

    def held_out(self, broadcast_id: int, lead_id: int) -> bool:
        """Whether the lead is in the holdout: a stable hash, independent of the variant split."""
        digest = hashlib.blake2b(f"{HOLDOUT}:{broadcast_id}:{lead_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64 * 100 < self.holdout

    def variant(self, name: str) -> Variant:
        return next((v for v in self.variants if v.name == name), self.variants[0])

    def pick(self, broadcast_id: int, lead_id: int) -> Variant:
        """The variant of one lead: a stable hash split by weight."""
        if len(self.variants) == 1:
            return self.variants[0]
        digest = hashlib.blake2b(f"{broadcast_id}:{lead_id}".encode(), digest_size=8).digest()
        point = int.from_bytes(digest, "big") / 2**64 * sum(v.weight for v in self.variants)
        for variant in self.variants:
            point -= variant.weight
            if point < 0:
                return variant
        return self.variants[-1]


class Renderer:
    """Renders variants for one recipient; templates are compiled once."""

    def __init__(self, quiz: Quiz, default_language: str = "ru") -> None:
        self.quiz = quiz
        self.default_language = default_language
        self._env = SandboxedEnvironment(autoescape=True, undefined=StrictUndefined)
        self._templates: dict[str, Template] = {}
        self._labels: dict[tuple[str, str, str], str] = {}
        self._keyboards: dict[tuple[int, str, str], tuple[InlineKeyboardMarkup, str]] = {}

    def pick_language(self, text: LocalText, lang: str) -> str:
        if isinstance(text, str):
            return text
        return text.get(lang) or text.get(self.default_language) or next(iter(text.values()))

    def values(self, r: Recipient) -> dict[str, Any]:
        """The template variables of a lead (plain values; jinja2 escapes them)."""
        lang, interests = r.language, r.interests
        return {
            "first_name": r.first_name or "", "last_name": r.last_name or "",
            "name": " ".join(part for part in (r.first_name, r.last_name) if part), "company": r.company or "",
            "username": r.tg_username or "", "city": interests.get("city") or "", "categories": self._label("category", interests, lang),
            "category_count": len(self.quiz.labels_of("category", interests, lang)),
            "volume": self._label("volume", interests, lang), "channel": self._label("channel", interests, lang), "stage": r.stage, "language": lang,
        }

    def _label(self, key: str, interests: dict[str, Any], lang: str) -> str:
        """The quiz labels of an answer, joined (memoised: a broadcast renders the same few answers again and again)."""
        cache_key = (key, repr(interests.get(key)), lang)
        found = self._labels.get(cache_key)
        if found is None:
            found = self._labels[cache_key] = ", ".join(self.quiz.labels_of(key, interests, lang))
        return found

    def text(self, variant: Variant, r: Recipient, *, stand_ins: bool = False) -> str | None:
        """The message text (or caption) for ``r``; raises :class:`jinja2.TemplateError` on a bad template.

        ``stand_ins``: what the buyer typed (names, company, city) replaced by a short plain word, kept empty if empty.
        """
        if variant.text is None:
            return None
        source = self.pick_language(variant.text, r.language)
        template = self._templates.get(source)
        if template is None:
            template = self._templates[source] = self._env.from_string(source)
        values = self.values(r)
        if stand_ins:
            values.update({key: STAND_IN for key in BUYER_TYPED if values[key]})
        return template.render(values).strip()

    def problem(self, variant: Variant, r: Recipient, *, stand_ins: bool = False) -> str | None:
        """Why ``variant`` can't be sent to ``r`` (template, markup, length), or None."""
        try:
            text = self.text(variant, r, stand_ins=stand_ins)
        except TemplateError as exc:
            return f"template: {exc}"
        if text is None or (not text and variant.limit == markup.CAPTION_LIMIT):
            return None
        return markup.problem(text, variant.limit)

    def keyboard(self, variant: Variant, lang: str, broadcast_id: int) -> tuple[InlineKeyboardMarkup, str]:
        """The variant's buttons plus the unsubscribe button, and their JSON (built once per broadcast, variant and language)."""
        key = (broadcast_id, variant.name, lang)
        if broadcast_id and key in self._keyboards:
            return self._keyboards[key]
        rows = []
        for button in variant.buttons:
            label = self.pick_language(button.text, lang)
            if button.url:
                rows.append([InlineKeyboardButton(text=label, url=button.url)])
            else:
                rows.append([InlineKeyboardButton(text=label, callback_data=BroadcastCb(broadcast=broadcast_id, action=button.action).pack())])
        unsubscribe = t(lang, "broadcasts.unsubscribe_button")
        rows.append([InlineKeyboardButton(text=unsubscribe, callback_data=BroadcastCb(broadcast=broadcast_id, action=UNSUBSCRIBE).pack())])
        markup = InlineKeyboardMarkup(inline_keyboard=rows)
        built = markup, markup.model_dump_json(exclude_none=True)
        if broadcast_id:  # a broadcast's content never changes once created
            self._keyboards[key] = built
        return built


@dataclass
class Validation:
    """Checks every variant for each recipient, keeping counts and the first few problems.

    A recipient whose own values break a message (it passes with :data:`STAND_IN` in place of what the
    buyer typed: a 1,000-character name, a city that overflows a caption) is *skipped*; a message that fails
    even so is *broken* (its template, markup or length is wrong). The broadcast is refused if any recipient
    finds it broken, or if more than :data:`MAX_SKIPPED` recipients or :data:`MAX_SKIPPED_SHARE` of them,
    whichever is more, would be skipped (a template too close to a limit, not a few hostile leads).
    """

    recipients: int = 0
    skipped: int = 0
    broken: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def failing(self) -> int:
        return self.skipped + self.broken

    @property
    def refused(self) -> bool:
        return self.broken > 0 or too_many_skipped(self.skipped, self.recipients)

    def check(self, renderer: Renderer, content: Content, r: Recipient) -> str | None:
        """None if every variant can be sent to ``r``; else why not (``r`` is counted as skipped or broken)."""
        self.recipients += 1
        found = [(variant, problem) for variant in content.variants if (problem := renderer.problem(variant, r))]
        if not found:
            return None
        own = all(renderer.problem(variant, r, stand_ins=True) is None for variant, _ in found)
        if own:
            self.skipped += 1
        else:
            self.broken += 1
        name = " ".join(part for part in (r.first_name, r.last_name) if part)
        reason = ("skipped, their own values break it: " if own else "") + "; ".join(f"{v.name}: {p}" for v, p in found)
        if len(self.problems) < 10:
            self.problems.append(f"lead #{r.id} {name[:40]}: {reason}")
        return reason


def too_many_skipped(skipped: int, recipients: int) -> bool:
    return skipped > max(MAX_SKIPPED, recipients * MAX_SKIPPED_SHARE)
