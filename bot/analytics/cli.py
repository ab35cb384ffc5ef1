"""``optobot report …`` (a PDF, XLSX or CSV report of a period) and ``optobot analytics spend import FILE.csv``.

:func:`register` adds the sub-commands; each sets ``func``: ``async (Settings, Namespace) -> int``.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo


from bot.analytics import spend
from bot.analytics.figures import money
from bot.analytics.labels import Labels
from bot.analytics.period import Period
from bot.analytics.report import build
from bot.analytics.request import BadRequest, parse_breakdowns, parse_filters
from bot.config import Settings
from bot.db.session import database
from bot.quiz import load_quiz

Managers = Callable[[Settings], Mapping[int, str]]
FORMATS = ("pdf", "xlsx", "csv")


def register(subparsers: argparse._SubParsersAction, managers: Managers) -> None:  # type: ignore[type-arg]
    """``managers``: amoCRM user → manager name, read from the settings (the operators file)."""
    report = subparsers.add_parser("report", help="sales report of a period as PDF, XLSX or CSV",
                                   description="Cohort of the leads that arrived from --from to --to (dates in TIMEZONE, both included).")
    report.add_argument("--from", dest="first", type=date.fromisoformat, required=True, metavar="YYYY-MM-DD")
    report.add_argument("--to", dest="last", type=date.fromisoformat, required=True, metavar="YYYY-MM-DD")
    report.add_argument("--by", action="append", default=[], metavar="BREAKDOWN",
                        help="source, medium, campaign, path, week, manager, language or a quiz question's key; "
                             "repeat or separate by commas; default: all")
    report.add_argument("--format", choices=FORMATS, help="default: from the -o file's extension")
    report.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    report.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                        help="only these leads: source=, medium=, campaign=, path=, language=, manager=, or a quiz answer (question=option)")
    report.add_argument("--lang", choices=("ru", "en"), help="default: DEFAULT_LANGUAGE")
    report.set_defaults(func=make_report, managers=managers)
    analytics = subparsers.add_parser("analytics", help="ad spend for the reports")
    commands = analytics.add_subparsers(dest="analytics_command", required=True)
    spend_commands = commands.add_parser("spend", help="ad spend").add_subparsers(dest="spend_command", required=True)
    importer = spend_commands.add_parser("import", help="import ad spend from a CSV file: date, source, campaign, amount (₽)")
    importer.add_argument("file", type=Path, metavar="FILE.csv")
    importer.set_defaults(func=import_spend)


async def make_report(settings: Settings, args: argparse.Namespace) -> int:
    """Write the report file; exit code 2 on a bad option."""
    from bot.analytics import export  # matplotlib, WeasyPrint, openpyxl: only for this command

    fmt = args.format or args.output.suffix.lstrip(".").lower()
    quiz, names = load_quiz(settings.quiz_config), args.managers(settings)
    try:
        if fmt not in FORMATS:
            raise BadRequest(f"-o {args.output} (or --format)", (f"*.{name}" for name in FORMATS))
        period = Period(args.first, args.last, ZoneInfo(settings.timezone))
        filters = parse_filters(args.filter, quiz, names)
        by = parse_breakdowns([name for value in args.by for name in value.split(",")], quiz)
    except ValueError as exc:
        print(f"optobot report: {exc}")
        return 2
    async with database(settings.database_url, upgrade=True) as db:
        report = await build(db, quiz, period, filters, by=by, crm=settings.amocrm_base_url is not None)
    labels = Labels(args.lang or settings.default_language, quiz, names)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(export.render(report, labels, fmt))
    total = report.total
    print(f"{args.output}: {period.first}…{period.last}, {total.arrived} leads, {total.key} reached the key stage")
    return 0


async def import_spend(settings: Settings, args: argparse.Namespace) -> int:
    """Import the file whole or not at all; exit code 1 with every problem listed."""
    try:
        rows = spend.parse(args.file.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        print(f"{args.file}: {exc.strerror}")
        return 1
    except UnicodeDecodeError:
        print(f"{args.file}: not UTF-8 text; save the export as CSV UTF-8")
        return 1
    except spend.SpendFileError as exc:
        print(f"{args.file}: nothing imported:")
        print("\n".join(f"  {problem}" for problem in exc.problems))
        return 1
    async with database(settings.database_url, upgrade=True) as db, db.begin() as session:
        await spend.store(session, rows)
    by_source: dict[str, int] = {}
    for row in rows:
        by_source[row.source] = by_source.get(row.source, 0) + row.amount
    days = f"{rows[0].day}…{max(row.day for row in rows)}" if rows else "no days"
    print(f"{args.file}: {len(rows)} rows, {days}: " + ", ".join(f"{source} {money(amount, 'en')}" for source, amount in sorted(by_source.items())))
    return 0
