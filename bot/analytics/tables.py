"""The report as tables of plain values, one definition for the PDF, the spreadsheet and CSV.

A cell holds a raw value: a count, kopecks, seconds, a rate, or a share as ``(part, whole)``; each
output formats it its own way (the PDF as «12 из 85 — 14 %», the spreadsheet as a number to pivot).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bot.analytics.labels import Labels
from bot.analytics.queries import BOT_STEPS, CRM_STEPS, Counts, Quantiles
from bot.analytics.report import Report
from bot.texts import t

TEXT, COUNT, SHARE, MONEY, SECONDS, RATE, POINTS = "text", "count", "share", "money", "seconds", "rate", "points"


@dataclass(frozen=True)
class Column:
    title: str
    kind: str


@dataclass
class Table:
    name: str  # a short name (a sheet's)
    title: str
    columns: list[Column]
    rows: list[list[Any]]


def _doc(labels: Labels, key: str) -> str:
    return t(labels.lang, f"analytics.document.{key}")


def _per(spend: int | None, count: int) -> int | None:
    return round(spend / count) if spend and count else None


def _romi(revenue: int, spend: int | None) -> float | None:
    return (revenue - spend) / spend if spend else None


def _times(quantiles: Quantiles | None) -> list[int | None]:
    return [quantiles.p50, quantiles.p90] if quantiles else [None, None]


def funnel(report: Report, labels: Labels) -> Table:
    """Each step now and in the previous period, as a share of the arrived and of the step before."""
    columns = [Column(_doc(labels, "step"), TEXT), Column(_doc(labels, "now"), SHARE), Column(_doc(labels, "before"), SHARE),
               Column(_doc(labels, "change"), POINTS), Column(_doc(labels, "from_previous"), SHARE)]
    rows = []
    previous_step: int | None = None
    for step in ("arrived", *BOT_STEPS, *CRM_STEPS):
        now, before = report.total.steps[step], report.previous.steps[step]
        arrived, earlier = report.total.arrived, report.previous.arrived
        change = (now / arrived if arrived else 0) - (before / earlier if earlier else 0)
        rows.append([labels.step(step), (now, arrived), (before, earlier), change if step != "arrived" else None,
                     (now, previous_step) if previous_step is not None else None])
        previous_step = now
    rows.append([t(labels.lang, "analytics.lost"), (report.total.lost, report.total.arrived),
                 (report.previous.lost, report.previous.arrived), None, None])
    return Table("funnel", _doc(labels, "funnel"), columns, rows)


def _group_row(name: str, counts: Counts, spend: int | None, times: Quantiles | None) -> list[Any]:
    return [name, counts.arrived, counts.steps["catalog_sent"], counts.key, (counts.key, counts.arrived), counts.sold, counts.lost,
            *_times(times), spend, _per(spend, counts.arrived), _per(spend, counts.key), counts.revenue, _romi(counts.revenue, spend)]


def breakdown(report: Report, dimension: str, labels: Labels) -> Table:
    """A breakdown's groups (and the total): funnel, losses, time to the key stage, costs and revenue."""
    doc = lambda key: _doc(labels, key)  # noqa: E731
    columns = [Column(labels.dimension(dimension), TEXT), Column(labels.step("arrived"), COUNT), Column(labels.step("catalog_sent"), COUNT),
               Column(doc("key"), COUNT), Column(doc("key_share"), SHARE), Column(labels.step("main_batch_sent"), COUNT),
               Column(doc("lost"), COUNT), Column(f"{doc('time_to_key')}: p50", SECONDS), Column(f"{doc('time_to_key')}: p90", SECONDS),
               Column(doc("spend"), MONEY), Column(doc("per_lead"), MONEY), Column(doc("per_test"), MONEY), Column(doc("revenue"), MONEY),
               Column(doc("romi"), RATE)]
    rows: list[list[Any]] = [_group_row(labels.key(dimension, row.key), row.counts, row.spend, row.time_to_key)
                             for row in report.breakdowns.get(dimension, [])]
    rows.append(_group_row(doc("total"), report.total, report.spend, report.time_to_key))
    return Table(dimension, labels.dimension(dimension), columns, rows)


def speed(report: Report, labels: Labels) -> Table:
    """The bot's first reply by arrival path."""
    columns = [Column(_doc(labels, "path"), TEXT), Column(_doc(labels, "count"), COUNT), Column("p50", SECONDS),
               Column("p95", SECONDS), Column(_doc(labels, "maximum"), SECONDS)]
    rows = [[labels.path(path) if path != "*" else _doc(labels, "total"), q.n, q.p50 / 1000, q.p95 / 1000, q.max / 1000]
            for path, q in sorted(report.first_replies.items(), key=lambda item: (item[0] == "*", -item[1].n))]
    return Table("speed", _doc(labels, "speed"), columns, rows)


def managers(report: Report, labels: Labels) -> Table:
    """Each manager's first answers within and outside working hours, and their overdue answers."""
    columns = [Column(_doc(labels, "manager"), TEXT), Column(_doc(labels, "answers"), COUNT), Column("p50", SECONDS), Column("p90", SECONDS),
               Column(f"{_doc(labels, 'in_hours')}: p50", SECONDS), Column(f"{_doc(labels, 'in_hours')}: p90", SECONDS),
               Column(f"{_doc(labels, 'off_hours')}: p50", SECONDS), Column(f"{_doc(labels, 'off_hours')}: p90", SECONDS),
               Column(_doc(labels, "breaches"), COUNT), Column(_doc(labels, "escalations"), COUNT)]
    rows = []
    for manager in report.managers:
        pings, escalations = report.breaches.get(manager.name, (0, 0)) if manager.tg_id else (
            sum(p for p, _ in report.breaches.values()), sum(e for _, e in report.breaches.values()))
        rows.append([manager.name or _doc(labels, "total"), manager.all.n if manager.all else 0, *_times(manager.all),
                     *_times(manager.in_hours), *_times(manager.off_hours), pings, escalations])
    answered = {manager.name for manager in report.managers}
    rows[-1:-1] = [[name or "—", 0, None, None, None, None, None, None, pings, escalations]
                   for name, (pings, escalations) in sorted(report.breaches.items()) if name not in answered]
    return Table("managers", _doc(labels, "sheet_managers"), columns, rows)


def broadcasts(report: Report, labels: Labels) -> Table:
    """Each broadcast and sequence step, by variant."""
    doc = lambda key: _doc(labels, key)  # noqa: E731
    columns = [Column(doc("broadcast"), TEXT), Column(doc("variant"), TEXT), Column(doc("recipients"), COUNT), Column(doc("delivered"), SHARE),
               Column(doc("blocked"), COUNT), Column(doc("unsubscribed"), SHARE), Column(doc("replied"), SHARE), Column(doc("converted"), SHARE)]
    rows = []
    for row in report.broadcasts:
        name = f"#{row.info.id} {row.info.name}"
        for figures in (row.sent if len(row.sent) > 1 else []) + [row.total] + ([row.holdout] if row.holdout else []):
            variant = doc("holdout") if figures.held_out else figures.variant or doc("total")
            rows.append([name, variant, figures.recipients, (figures.delivered, figures.recipients), figures.blocked,
                         (figures.unsubscribed, figures.reached), (figures.replied, figures.reached), (figures.converted, figures.reached)])
    return Table("broadcasts", doc("broadcasts"), columns, rows)


def daily(report: Report, labels: Labels) -> Table:
    paths = sorted({path for _, counts in report.days for path in counts})
    columns = [Column(_doc(labels, "date"), TEXT), *(Column(labels.path(path), COUNT) for path in paths), Column(_doc(labels, "total"), COUNT)]
    rows = [[day.isoformat(), *(counts.get(path, 0) for path in paths), sum(counts.values())] for day, counts in report.days]
    return Table("days", _doc(labels, "sheet_days"), columns, rows)


def every(report: Report, labels: Labels) -> Iterator[Table]:
    """All tables of a report: funnel, each breakdown, speed, managers, broadcasts, days."""
    yield funnel(report, labels)
    for dimension in report.breakdowns:
        yield breakdown(report, dimension, labels)
    yield speed(report, labels)
    yield managers(report, labels)
    yield broadcasts(report, labels)
    yield daily(report, labels)
