"""Rendering and validation of broadcast messages: personalisation, escaping, markup and length checks."""
from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from bot.config import DEFAULT_QUIZ, PROJECT_DIR
from bot.quiz import load_quiz
from broadcasts.content import MAX_SKIPPED, Content, Renderer, Validation, Variant
from bot.hours import QuietHours, zone_of
from broadcasts.schedule import parse_duration
from broadcasts.segments import Recipient

RENDERER = Renderer(load_quiz(DEFAULT_QUIZ))


def buyer(**fields: object) -> Recipient:
    values = {"id": 1, "tg_user_id": 1, "first_name": "Анна", "last_name": None, "company": None, "tg_username": None, "language": "ru",
              "interests": {"category": ["shoes", "kids"], "volume": "100to300k", "city": "Казань"}, "stage": "catalog_sent", "source": None}
    return Recipient(**{**values, **fields})


def test_personalisation_uses_the_quiz_labels_in_the_buyers_language() -> None:
    variant = Variant(text={"ru": "{{ first_name }}: {{ categories }}, {{ volume }}", "en": "{{ first_name }}: {{ categories }}"})
    assert RENDERER.text(variant, buyer()) == "Анна: Обувь, Детская одежда, 100–300 тыс ₽"
    assert RENDERER.text(variant, buyer(language="en")) == "Анна: Shoes, Children&#39;s clothing"  # escaped, shown as an apostrophe
    assert RENDERER.text(Variant(text={"ru": "Привет"}), buyer(language="en")) == "Привет"  # missing language: the default


def test_the_warmup_names_one_category_or_several() -> None:
    sequence = yaml.safe_load((PROJECT_DIR / "broadcasts" / "sequences.yaml").read_text(encoding="utf-8"))["sequences"][0]
    variant = Variant(**sequence["steps"][0]["message"])
    one, several = (RENDERER.text(variant, buyer(interests={"category": categories, "volume": "100to300k"}))
                    for categories in (["shoes"], ["shoes", "kids"]))
    assert one.startswith("Анна, собрали самые ходовые позиции в категории «Обувь»:")
    assert several.startswith("Анна, собрали самые ходовые позиции в ваших категориях (Обувь, Детская одежда):")
    assert RENDERER.text(variant, buyer(first_name=None, interests={})).startswith("Собрали самые ходовые позиции: их")


def test_lead_values_are_escaped_for_telegram_html() -> None:
    variant = Variant(text="<b>{{ first_name }}</b> из {{ company }}")
    text = RENDERER.text(variant, buyer(first_name="<i>Иван</i>", company="Рога & Копыта"))
    assert text == "<b>&lt;i&gt;Иван&lt;/i&gt;</b> из Рога &amp; Копыта"
    assert RENDERER.problem(variant, buyer(first_name="<i>Иван</i>")) is None


@pytest.mark.parametrize(("template", "fields", "problem"), [
    ("<b>Скидки", {}, "unclosed <b>"),
    ("<h1>Скидки</h1>", {}, "unsupported tag <h1>"),
    ("<b>Скидки</i>", {}, "unexpected </i>"),
    ("5 < 6", {}, 'unescaped "<"'),
    ("Рога & Копыта", {}, 'unescaped "&"'),
    ('<a>ссылка</a>', {}, "<a> without href"),
    ("{{ nme }}", {}, "template: 'nme' is undefined"),
    ("{{ ''.__class__.__mro__ }}", {}, "template:"),
    ("{{ city }} " + "x" * 4085, {}, None),
    ("{{ city }} " + "x" * 4085, {"interests": {"city": "Санкт-Петербург"}}, "too long: 4101 characters"),
    ("{% if first_name %}{{ first_name }}{% endif %}", {"first_name": None}, "empty message"),
])
def test_every_rendering_is_checked(template: str, fields: dict[str, object], problem: str | None) -> None:
    found = RENDERER.problem(Variant(text=template), buyer(**fields))
    assert (found is None) if problem is None else (found is not None and problem in found), found


def test_captions_have_their_own_limit_and_may_be_empty() -> None:
    assert "limit 1024" in RENDERER.problem(Variant(photo="AgAD", text="x" * 1025), buyer())
    assert RENDERER.problem(Variant(photo="AgAD"), buyer()) is None
    assert RENDERER.problem(Variant(catalog=True, text="Ваш каталог"), buyer()) is None


def test_validation_counts_recipients_and_keeps_the_first_problems() -> None:
    content = Content(variants=[Variant(name="A", text="{{ city }}"), Variant(name="B", text="<b>{{ city }}</b>")])
    checked = Validation()
    results = [checked.check(RENDERER, content, buyer(id=i, interests={"city": "" if i % 2 else "Казань"})) for i in range(30)]
    assert results.count(None) == 15 and checked.failing == checked.broken == 15 and len(checked.problems) == 10
    assert checked.problems[0].startswith("lead #1 Анна: A: empty message; B: empty message")
    assert checked.refused  # empty without a city: the template's fault, not the buyers'


def test_a_recipient_whose_own_values_break_the_message_is_skipped_not_a_broken_template() -> None:
    content = Content(variants=[Variant(photo="AgAD", text="{{ first_name }}, доставка в {{ city }}")])
    checked = Validation()
    hostile = buyer(id=7, first_name="Я" * 128, interests={"city": "Х" * 1000})
    assert "too long" in checked.check(RENDERER, content, hostile)
    assert [checked.check(RENDERER, content, buyer(id=i)) for i in range(20)] == [None] * 20
    assert (checked.skipped, checked.broken, checked.refused) == (1, 0, False)
    assert checked.problems == [f"lead #7 {'Я' * 40}: skipped, their own values break it: A: too long: 1141 characters after rendering (limit 1024)"]
    for i in range(MAX_SKIPPED):
        checked.check(RENDERER, content, hostile)
    assert checked.skipped == MAX_SKIPPED + 1 and checked.refused  # more than MAX_SKIPPED of 31 (and more than 10%)


def test_shapes_are_refused() -> None:
    with pytest.raises(ValidationError):
        Variant(photo="AgAD", document="BQAD")
    with pytest.raises(ValidationError):
        Variant()
    with pytest.raises(ValidationError):
        Variant(text="x", buttons=[{"text": "x", "url": "javascript:alert(1)"}])
    with pytest.raises(ValidationError):
        Content(variants=[Variant(text="a"), Variant(text="b")])  # two variants named A


def test_variants_split_by_weight_and_stay_stable() -> None:
    content = Content(variants=[Variant(name="A", weight=20, text="a"), Variant(name="B", weight=80, text="b")])
    picks = [content.pick(7, lead_id).name for lead_id in range(5000)]
    assert 900 <= picks.count("A") <= 1100
    assert picks == [content.pick(7, lead_id).name for lead_id in range(5000)]


def test_quiet_hours_across_midnight_and_durations() -> None:
    from datetime import datetime, timezone

    quiet = QuietHours.parse("21:00-09:00")
    moscow, novosibirsk = zone_of("Казань", "Europe/Moscow"), zone_of("Новосибирск", "Europe/Moscow")
    evening = datetime(2026, 12, 1, 17, 30, tzinfo=timezone.utc)  # 20:30 in Moscow, 00:30 in Novosibirsk
    assert quiet.until(evening, moscow) is None
    assert quiet.until(evening, novosibirsk) == datetime(2026, 12, 2, 2, 0, tzinfo=timezone.utc)  # 09:00 there
    assert QuietHours.parse("") is None and zone_of("Неизвестноград", "Europe/Moscow").key == "Europe/Moscow"
    assert parse_duration("3d").days == 3 and parse_duration("12h").seconds == 12 * 3600
