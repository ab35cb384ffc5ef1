"""Ad spend from a CSV file: ``date, source, campaign, amount`` (what Yandex Direct and VK Ads exports
reduce to). A file is checked whole before anything is written; importing it again replaces the same
days, sources and campaigns, so a corrected export can simply be imported once more."""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

from sqlalchemy import delete, insert, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from bot.analytics.models import AdSpend

# Accepted column names (case does not matter); the first row must name the columns.
COLUMNS = {
    "date": ("date", "day", "дата", "день"),
    "source": ("source", "utm_source", "источник"),
    "campaign": ("campaign", "utm_campaign", "campaign_name", "кампания", "название кампании"),
    "amount": ("amount", "cost", "spend", "сумма", "расход", "стоимость"),
}
DATE_FORMATS = ("%Y-%m-%d", "%d.%m.%Y", "%d.%m.%y", "%d/%m/%Y")
MAX_ERRORS = 20


class SpendFileError(ValueError):
    """The file cannot be imported; ``problems`` says where and why (line numbers as a spreadsheet shows them)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Spend:
    day: date
    source: str
    campaign: str
    amount: int  # kopecks


def _day(value: str) -> date:
    for fmt in DATE_FORMATS:
        try:
            return datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"date {value!r}: write it as 2025-06-01 or 01.06.2025")


def _kopecks(value: str) -> int:
    """``1 234,56`` / ``1234.56`` / ``1 234 ₽`` → kopecks (the last comma or dot is the decimal one)."""
    text = re.sub(r"[\s\u00a0₽]|руб\.?|RUB", "", value, flags=re.IGNORECASE)
    mark = max(text.rfind(","), text.rfind("."))
    if mark >= 0:
        text = re.sub(r"[,.]", "", text[:mark]) + "." + text[mark + 1:]
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"amount {value!r} is not a number of roubles") from None
    if amount < 0:
        raise ValueError(f"amount {value!r} is negative")
    return int((amount * 100).to_integral_value())


def _name(cell: str) -> tuple[str, str]:
    """A header cell's words, and its first word: ``"Расход, ₽"`` → ``("расход", "расход")``."""
    words = re.findall(r"\w+", cell.lower())
    return " ".join(words), words[0] if words else ""


def _header(row: list[str]) -> dict[str, int]:
    found = {}
    names = [_name(cell) for cell in row]
    for column, aliases in COLUMNS.items():
        index = next((i for i, (whole, first) in enumerate(names) if whole in aliases or first in aliases), None)
        if index is not None:
            found[column] = index
    missing = [column for column in COLUMNS if column not in found and column != "campaign"]
    if missing:
        raise SpendFileError([f"line 1: no column {', '.join(missing)} (the first line must name the columns: "
                              f"date, source, campaign, amount; found {', '.join(row) or 'nothing'})"])
    return found


def parse(text: str) -> list[Spend]:
    """Every row of the file (rows of the same day, source and campaign added up), or :class:`SpendFileError`."""
    text = text.lstrip("\ufeff")
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    rows = list(csv.reader(io.StringIO(text), dialect))
    if not rows:
        raise SpendFileError(["the file is empty"])
    columns = _header(rows[0])
    totals: dict[tuple[date, str, str], int] = {}
    problems = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            cells = {column: row[index].strip() if index < len(row) else "" for column, index in columns.items()}
            if not cells["source"]:
                raise ValueError("source is empty")
            key = (_day(cells["date"]), cells["source"], cells.get("campaign", ""))
            totals[key] = totals.get(key, 0) + _kopecks(cells["amount"])
        except ValueError as exc:
            problems.append(f"line {line}: {exc}")
            if len(problems) == MAX_ERRORS:
                problems.append("… (stopped after 20 problems)")
                break
    if problems:
        raise SpendFileError(problems)
    return [Spend(day, source, campaign, amount) for (day, source, campaign), amount in sorted(totals.items())]


async def store(session: AsyncSession, rows: list[Spend]) -> None:
    """Write ``rows``, replacing what was imported before for the same day, source and campaign."""
    keys = [(row.day, row.source, row.campaign) for row in rows]
    for start in range(0, len(keys), 500):
        await session.execute(delete(AdSpend).where(tuple_(AdSpend.day, AdSpend.source, AdSpend.campaign).in_(keys[start:start + 500])))
    if rows:
        await session.execute(insert(AdSpend), [{"day": r.day, "source": r.source, "campaign": r.campaign, "amount": r.amount} for r in rows])
