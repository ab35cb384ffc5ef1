"""The report as files: a PDF (WeasyPrint, charts as SVG, tables, the previous period alongside), an XLSX
with a sheet per table (plain numbers to pivot), and CSV (the breakdowns, one row per group)."""
from __future__ import annotations

import base64
import csv
import io
import re
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from openpyxl import Workbook
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

from bot.analytics import charts, summary, tables
from bot.analytics.figures import day, money, number, percent, points, share
from bot.analytics.labels import Labels
from bot.analytics.report import Report
from bot.analytics.tables import COUNT, MONEY, POINTS, RATE, SECONDS, SHARE, TEXT, Table
from bot.texts import duration, t

TEMPLATES = Path(__file__).parent / "templates"
_environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
_SHEET_NAME = re.compile(r"[\[\]:*?/\\]")
_EMOJI = re.compile("[\U00010000-\U0010ffff\u2300-\u23ff\u2600-\u27bf\ufe0f\u200d]")


def _cell(lang: str) -> Any:
    def cell(value: Any, kind: str) -> str:
        if value is None:
            return "—"
        if kind == SHARE:
            return share(*value, lang) if value[1] is not None else "—"
        if kind == MONEY:
            return money(value, lang)
        if kind == SECONDS:
            return duration(value, lang)
        if kind == RATE:
            return percent(value, lang)
        if kind == POINTS:
            return points(value, 0, lang)
        if kind == COUNT:
            return number(value, lang)
        return str(value)
    return cell


def _printable(line: str) -> Markup:
    """A summary line (Telegram HTML) for the PDF: without emoji, which its fonts do not have."""
    return Markup(_EMOJI.sub("", line).strip())


def _image(svg: bytes) -> str:
    """A chart as a ``data:`` URL: the only kind of URL the PDF may load."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii")


def html(report: Report, labels: Labels) -> str:
    """The report as one self-contained HTML page (what the PDF is printed from)."""
    lang, period, previous = labels.lang, report.period, report.period.previous()
    key_lines = summary.head_lines(report, labels)[-3 if report.time_to_key else -2:]
    facts = [_printable(line) for line in (*summary.speed_lines(report, labels)[2:], *summary.money_lines(report, labels)[2:])]
    return _environment.get_template("report.html").render(
        lang=lang,
        title=t(lang, "analytics.document.title", first=day(period.first, lang), last=day(period.last, lang)),
        generated=t(lang, "analytics.document.generated", when=report.generated_at.astimezone(period.zone).strftime("%d.%m.%Y %H:%M"),
                    zone=period.zone.key),
        compared=t(lang, "analytics.document.compared", first=day(previous.first, lang), last=day(previous.last, lang)),
        filters=summary.filters_text(report.filters, labels) if report.filters.active else "",
        key_line=_printable(key_lines[0]), key_notes=[_printable(line) for line in key_lines[1:]],
        facts=facts, summary_title=t(lang, "analytics.document.summary"),
        charts=[_image(chart) for chart in charts.report_charts(report, labels, "svg")],
        tables=list(tables.every(report, labels)), cell=_cell(lang), small_note=t(lang, "analytics.small_note"),
    )


def pdf(report: Report, labels: Labels) -> bytes:
    from weasyprint import HTML  # heavy: only when a PDF is made

    return HTML(string=html(report, labels), url_fetcher=fetcher()).write_pdf()


def fetcher() -> Any:
    """What the PDF may load: its own ``data:`` URLs (the charts); never a file or the network."""
    from weasyprint.urls import URLFetcher

    return URLFetcher(allowed_protocols=("data",), allow_redirects=False)


def _sheet_title(name: str, taken: set[str]) -> str:
    title = _SHEET_NAME.sub(" ", name).strip()[:31].strip() or "sheet"
    candidate, number_ = title, 2
    while candidate.lower() in taken:
        candidate = f"{title[:28]} {number_}"
        number_ += 1
    taken.add(candidate.lower())
    return candidate


def _columns(table: Table) -> list[tuple[str, str | None]]:
    """Spreadsheet columns (title, number format) of a table: a share becomes its rate."""
    formats = {COUNT: "#,##0", MONEY: '#,##0" ₽"', SECONDS: "#,##0.##", RATE: "0.0%", POINTS: "+0.0%;-0.0%;0.0%", SHARE: "0.0%", TEXT: None}
    return [(column.title, formats[column.kind]) for column in table.columns]


def _value(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == SHARE:
        part, whole = value
        return part / whole if whole else None
    if kind == MONEY:
        return round(value / 100)
    return value


def xlsx(report: Report, labels: Labels) -> bytes:
    """One sheet per table; cells are numbers (rates as fractions with a % format, money in roubles)."""
    book = Workbook()
    book.remove(book.active)
    taken: set[str] = set()
    for table in tables.every(report, labels):
        sheet = book.create_sheet(_sheet_title(table.title, taken))
        columns = _columns(table)
        sheet.append([title for title, _ in columns])
        for cell in sheet[1]:
            cell.font = Font(bold=True)
        for row in table.rows:
            sheet.append([_value(value, column.kind) for value, column in zip(row, table.columns)])
        for index, (title, fmt) in enumerate(columns, start=1):
            letter = get_column_letter(index)
            sheet.column_dimensions[letter].width = min(max(len(title), 10) + 2, 40)
            if fmt:
                for (cell,) in sheet.iter_rows(min_row=2, min_col=index, max_col=index):
                    cell.number_format = fmt
        sheet.freeze_panes = "B2"
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def csv_text(report: Report, labels: Labels) -> str:
    """The breakdowns in one table (a ``breakdown`` column first), numbers plain, rates as fractions."""
    out = io.StringIO()
    writer = csv.writer(out)
    header_written = False
    for dimension in report.breakdowns:
        table = tables.breakdown(report, dimension, labels)
        if not header_written:
            writer.writerow(["breakdown", "group", *(title for title, _ in _columns(table)[1:])])
            header_written = True
        for row in table.rows:
            writer.writerow([dimension, row[0], *("" if (v := _value(value, column.kind)) is None else v
                                                  for value, column in zip(row[1:], table.columns[1:]))])
    return out.getvalue()


def render(report: Report, labels: Labels, fmt: str) -> bytes:
    """The report as ``pdf``, ``xlsx`` or ``csv``."""
    if fmt == "pdf":
        return pdf(report, labels)
    if fmt == "xlsx":
        return xlsx(report, labels)
    return csv_text(report, labels).encode("utf-8-sig")  # with a BOM, so Excel reads the Cyrillic right
