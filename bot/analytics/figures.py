"""How figures read: shares with their denominators (small samples flagged), money, dates."""
from __future__ import annotations

from datetime import date

from babel import Locale
from babel.dates import format_date
from babel.numbers import format_decimal, format_percent

from bot.texts import t

SMALL = 30  # a share of fewer cases than this is flagged: chance moves it a lot
FLAG = "*"


def number(value: float, lang: str) -> str:
    """``12 345`` / ``12,345``."""
    return format_decimal(value, locale=lang)


def decimal(value: float, lang: str) -> str:
    """``0,5`` / ``0.5``: one decimal."""
    return format_decimal(round(value, 1), format="0.0", locale=lang)


def percent(value: float, lang: str) -> str:
    """``14 %`` (one decimal below 10 %: ``1,3 %``)."""
    if abs(value) >= 0.1 or value == 0:
        return format_percent(value, locale=lang)
    pattern = Locale.parse(lang).percent_formats[None].pattern.replace("0", "0.#")
    return format_percent(value, format=pattern, locale=lang)


def small(whole: int) -> bool:
    return 0 < whole < SMALL


def share(part: int, whole: int, lang: str) -> str:
    """«12 из 85 — 14 %», flagged when 85 is a small sample; «0 из 0» without a percentage."""
    if not whole:
        return t(lang, "analytics.share_empty", part=number(part, lang), whole=number(whole, lang))
    text = t(lang, "analytics.share", part=number(part, lang), whole=number(whole, lang), percent=percent(part / whole, lang))
    return text + FLAG if small(whole) else text


def points(now: float, before: float, lang: str) -> str:
    """The change of a rate in percentage points: ``+1,5 п.п.``."""
    value = round((now - before) * 100, 1)
    sign = "+" if value > 0 else "−" if value < 0 else "±"
    return t(lang, "analytics.points", value=sign + format_decimal(abs(value), format="0.#", locale=lang))


def money(kopecks: int | None, lang: str) -> str:
    """``4 000 ₽`` (whole roubles); ``—`` when unknown."""
    if kopecks is None:
        return "—"
    return t(lang, "analytics.money", amount=format_decimal(round(kopecks / 100), locale=lang))


def cost(kopecks: int | None, count: int, lang: str) -> str:
    """What one of ``count`` cost; ``—`` when there is no spend or none of them."""
    return money(round(kopecks / count), lang) if kopecks and count else "—"


def day(value: date, lang: str) -> str:
    """``01.06.2025``."""
    return format_date(value, "dd.MM.yyyy", locale=lang)


def short_day(value: date, lang: str) -> str:
    """``01.06``."""
    return format_date(value, "dd.MM", locale=lang)
