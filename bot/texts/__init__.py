"""Every buyer-facing string, in one place: ``bot/texts/<feature>.<lang>.yaml``.

``t(lang, "journey.greeting", name=...)`` formats a text with ``str.format``; every
keyword value is HTML-escaped unless wrapped in :class:`Safe`, so buyer input can
never break Telegram HTML markup. ``plural(lang, "relay.price.models", 5)`` gives a count
with the form of its noun the number needs (ru: 1 модель, 2 модели, 5 моделей; en: 1 model,
5 models), from forms keyed by the CLDR plural categories of the language (Babel's rules).
"""
from __future__ import annotations

import html
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from babel import Locale
from babel.numbers import format_decimal

TEXTS_DIR = Path(__file__).parent
LANGUAGES = ("ru", "en")
FALLBACK = "ru"


class Safe(str):
    """A string that is already valid Telegram HTML and must not be escaped again."""


def escape(value: Any) -> str:
    """Escape a value for Telegram HTML (``<``, ``>``, ``&`` and quotes)."""
    if isinstance(value, Safe):
        return value
    return html.escape("" if value is None else str(value), quote=True)


PLURAL_CATEGORIES = frozenset({"zero", "one", "two", "few", "many", "other"})


def _flatten(prefix: str, node: Any, out: dict[str, Any]) -> None:
    if isinstance(node, dict) and not (node and set(node) <= PLURAL_CATEGORIES):  # plural forms are one text
        for key, value in node.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), value, out)
    else:
        out[prefix] = node


@lru_cache(maxsize=None)
def catalogue(lang: str) -> dict[str, Any]:
    """All texts of one language, keyed ``<feature>.<dotted.key>``."""
    texts: dict[str, Any] = {}
    for path in sorted(TEXTS_DIR.glob(f"*.{lang}.yaml")):
        feature = path.name.split(".")[0]
        _flatten(feature, yaml.safe_load(path.read_text(encoding="utf-8")) or {}, texts)
    return texts


def normalise_language(code: str | None, default: str = FALLBACK) -> str:
    """Map a Telegram ``language_code`` (``ru``, ``en-US``…) to a supported language."""
    lang = (code or "").split("-")[0].lower()
    return lang if lang in LANGUAGES else default


def raw(lang: str, key: str) -> Any:
    """The unformatted text (or list/dict) for ``key``, falling back to Russian."""
    lang = lang if lang in LANGUAGES else FALLBACK
    for candidate in (lang, FALLBACK):
        value = catalogue(candidate).get(key)
        if value is not None:
            return value
    raise KeyError(f"no text {key!r}")


def t(lang: str, key: str, /, **values: Any) -> str:
    """The text ``key`` in ``lang`` with ``values`` HTML-escaped and substituted."""
    template = raw(lang, key)
    return template.format(**{name: escape(value) for name, value in values.items()})


@lru_cache(maxsize=None)
def _plural_rule(lang: str) -> Any:
    return Locale.parse(lang).plural_form


def plural(lang: str, key: str, count: float) -> str:
    """``count`` with the form of ``key`` (``{one: "{n} модель", few: …, many: …, other: …}``) its number takes in ``lang``
    (``{n}`` written the language's way: ``12 345``, ``1,5``)."""
    lang = lang if lang in LANGUAGES else FALLBACK
    forms = raw(lang, key)
    return str(forms[_plural_rule(lang)(count)]).format(n=format_decimal(count, locale=lang))


def duration(seconds: float, lang: str) -> str:
    """``0,25 с``, ``45 с``, ``4 мин 10 с``, ``37 мин``, ``2 ч 05 мин``, ``3 д 4 ч``."""
    s, m, h, d = (raw(lang, f"units.{unit}") for unit in "smhd")
    if seconds < 10:
        return f"{format_decimal(round(seconds, 2), format='0.##', locale=lang if lang in LANGUAGES else FALLBACK)} {s}"
    total = round(seconds)
    if total < 60:
        return f"{total} {s}"
    if total < 600:
        return f"{total // 60} {m} {total % 60:02d} {s}"
    if total < 3600:
        return f"{total // 60} {m}"
    if total < 86400:
        return f"{total // 3600} {h} {total % 3600 // 60:02d} {m}"
    return f"{total // 86400} {d} {total % 86400 // 3600} {h}"
