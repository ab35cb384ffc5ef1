"""Texts: ru and en say the same things (keys, placeholders, plural forms), counts agree with their nouns, tasks name a
buyer without declining the name, and promises of a manager's answer follow the working hours."""
from __future__ import annotations

import re
import string
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from babel import Locale
from jinja2 import Environment, meta

from bot.config import DEFAULT_QUIZ, PACKAGE_DIR, PROJECT_DIR
from bot.crm.compose import Composer
from bot.crm.config import load_crm_config
from bot.db.models import Lead
from bot.hours import WorkingHours
from bot.quiz import load_quiz
from bot.texts import LANGUAGES, PLURAL_CATEGORIES, TEXTS_DIR, plural

MOSCOW = ZoneInfo("Europe/Moscow")


def leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key → text, list of texts, or plural forms (a mapping of CLDR categories)."""
    if isinstance(node, dict) and not (node and set(node) <= PLURAL_CATEGORIES):
        return {k: v for key, value in node.items() for k, v in leaves(value, f"{prefix}.{key}" if prefix else str(key)).items()}
    return {prefix: node}


def placeholders(value: Any) -> set[str]:
    texts = value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]
    return {field for text in texts for _, field, _, _ in string.Formatter().parse(str(text)) if field is not None}


@pytest.mark.parametrize("feature", sorted({path.name.split(".")[0] for path in TEXTS_DIR.glob("*.yaml")}))
def test_every_text_file_has_the_same_keys_and_placeholders_in_ru_and_en(feature: str) -> None:
    ru, en = (leaves(yaml.safe_load((TEXTS_DIR / f"{feature}.{lang}.yaml").read_text(encoding="utf-8")) or {}) for lang in LANGUAGES)
    assert sorted(set(ru) ^ set(en)) == [], "keys only in one language"
    for key in ru:
        assert placeholders(ru[key]) == placeholders(en[key]), key
        assert type(ru[key]) is type(en[key]), key
        if isinstance(ru[key], list):
            assert len(ru[key]) == len(en[key]), key
    for lang, texts in zip(LANGUAGES, (ru, en)):
        for key, value in texts.items():
            if isinstance(value, dict):  # plural forms: every category the language distinguishes, each with the count
                assert set(value) == set(Locale.parse(lang).plural_form.tags) | {"other"}, (lang, key)
                assert all("{n}" in form for form in value.values()), (lang, key)


def test_the_sequences_say_the_same_in_ru_and_en() -> None:
    env = Environment()
    texts = []

    def collect(node: Any) -> None:
        if isinstance(node, dict) and set(node) == set(LANGUAGES):
            texts.append(node)
        elif isinstance(node, dict):
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    for path in [PROJECT_DIR / "broadcasts" / "sequences.yaml", *(PROJECT_DIR / "broadcasts" / "examples").glob("*.yaml")]:
        collect(yaml.safe_load(path.read_text(encoding="utf-8")))
    assert texts
    for text in texts:
        ru, en = (meta.find_undeclared_variables(env.parse(text[lang])) for lang in LANGUAGES)
        assert ru == en, text


@pytest.mark.parametrize(("count", "ru", "en"), [
    (1, "1 модель", "1 model"), (2, "2 модели", "2 models"), (5, "5 моделей", "5 models"), (11, "11 моделей", "11 models"),
    (12, "12 моделей", "12 models"), (21, "21 модель", "21 models"), (22, "22 модели", "22 models"), (0, "0 моделей", "0 models"),
])
def test_a_count_takes_the_form_its_number_needs(count: int, ru: str, en: str) -> None:
    assert (plural("ru", "relay.price.models", count), plural("en", "relay.price.models", count)) == (ru, en)


def test_minutes_after_within_are_in_the_genitive() -> None:
    assert [plural("ru", "hours.minutes", n) for n in (1, 5, 15, 21, 30)] == ["1 минуты", "5 минут", "15 минут", "21 минуты", "30 минут"]


# ------------------------------------------------------------------ the promise
@pytest.mark.parametrize(("local", "ru", "en"), [
    ("2026-12-02 12:00", "в течение 15 минут", "within 15 minutes"),  # Wednesday, working
    ("2026-12-02 18:50", "завтра после 9:00", "tomorrow after 9:00"),  # 10 minutes before closing: not enough
    ("2026-12-02 23:00", "завтра после 9:00", "tomorrow after 9:00"),
    ("2026-12-03 07:30", "сегодня после 9:00", "today after 9:00"),
    ("2026-12-04 20:00", "в понедельник после 9:00", "on Monday after 9:00"),  # Friday night
    ("2026-12-05 11:00", "в понедельник после 9:00", "on Monday after 9:00"),  # Saturday
])
def test_a_manager_is_promised_when_the_working_hours_allow(local: str, ru: str, en: str) -> None:
    hours = WorkingHours.parse("09:00-19:00", "1-5", "Europe/Moscow")
    moment = datetime.fromisoformat(local).replace(tzinfo=MOSCOW).astimezone(timezone.utc)
    assert (hours.answer_by(moment, 15, "ru"), hours.answer_by(moment, 15, "en")) == (ru, en)


def test_a_working_day_starting_on_the_half_hour_and_a_tuesday() -> None:
    hours = WorkingHours.parse("09:30-18:00", "2-6", "Asia/Yekaterinburg")
    sunday_night = datetime(2026, 12, 6, 22, 0, tzinfo=ZoneInfo("Asia/Yekaterinburg"))
    assert hours.answer_by(sunday_night, 30, "ru") == "во вторник после 9:30"


# ---------------------------------------------------------------- CRM tasks
@pytest.mark.parametrize("name", [("Анна", "Петрова"), ("Олег", None), ("ООО «Вектор»", None), ("Sasha", "K.")])
def test_tasks_name_the_buyer_as_written_without_declension_or_gender(name: tuple[str, str | None]) -> None:
    config = load_crm_config(PACKAGE_DIR / "crm" / "crm.yaml")
    composer = Composer("ru", load_quiz(DEFAULT_QUIZ), MOSCOW)
    lead = Lead(id=1, first_name=name[0], last_name=name[1], phone="+79990001122", interests={"city": "Казань"})
    full = " ".join(part for part in name if part)
    data = {"assortment": "платья", "city": "Казань", "phone": "+79990001122", "text": "Есть 46?", "minutes": 5}
    for kind in config.tasks:
        text = composer.task(kind, lead, data)
        assert full in text, (kind, text)
        assert not re.search(r"\b(ему|ей|его|её|него|неё|он|она)\b", text), (kind, text)  # no gender
        assert not re.search(rf"\b(у|для|покупателю|покупателем|с) {re.escape(full)}", text), (kind, text)  # no case to agree with
