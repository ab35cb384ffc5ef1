"""Charts of a report, readable on a phone: PNG for Telegram, SVG for the PDF (matplotlib, Agg, DejaVu Sans
for Cyrillic). Figures are built with the object API (no pyplot state), so rendering in a thread is safe."""
from __future__ import annotations

from io import BytesIO

import matplotlib

matplotlib.use("Agg")
from matplotlib.axes import Axes  # noqa: E402  (after choosing the backend)
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from bot.analytics.figures import number, percent, share, short_day, small  # noqa: E402
from bot.analytics.labels import Labels  # noqa: E402
from bot.analytics.queries import BOT_STEPS, CRM_STEPS, KEY_STAGE, NONE, RESPONSE_BUCKETS  # noqa: E402
from bot.analytics.report import REPORT_CHARTS, Report, Row  # noqa: E402
from bot.analytics.summary import rate  # noqa: E402
from bot.texts import raw, t  # noqa: E402

matplotlib.rcParams.update({
    "font.family": "DejaVu Sans", "font.size": 13, "axes.titlesize": 16, "axes.titleweight": "bold",
    "axes.spines.top": False, "axes.spines.right": False, "svg.hashsalt": "optobot",
})
SIZE = (10, 6.2)  # inches; 1200 × 744 px at DPI
DPI = 120
ACCENT, MAIN, MUTED, LOST = "#d9480f", "#1c7ed6", "#a5d8ff", "#adb5bd"
BUCKET_COLOURS = ("#2b8a3e", "#74b816", "#fab005", "#fd7e14", "#e8590c", "#c92a2a")
PATH_COLOURS = {"quiz": "#1c7ed6", "ad": "#f08c00", "phone": "#7048e8", "cold": "#868e96", NONE: "#ced4da"}
MAX_GROUPS = 8


def _figure() -> tuple[Figure, Axes]:
    figure = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    return figure, figure.add_subplot()


def _save(figure: Figure, fmt: str) -> bytes:
    buffer = BytesIO()
    figure.savefig(buffer, format=fmt, dpi=DPI, metadata={"Date": None} if fmt == "svg" else None)
    return buffer.getvalue()


def _empty(axes: Axes, labels: Labels) -> None:
    axes.text(0.5, 0.5, t(labels.lang, "analytics.charts.empty"), ha="center", va="center", fontsize=16, color=LOST, transform=axes.transAxes)
    axes.set_axis_off()


def funnel(report: Report, labels: Labels, fmt: str = "png") -> bytes:
    """The funnel: a bar per step with its count and share of the leads that arrived (the key stage stands out)."""
    lang, total = labels.lang, report.total
    figure, axes = _figure()
    steps = ("arrived", *BOT_STEPS, *CRM_STEPS)
    counts = [total.steps[step] for step in steps] + [total.lost]
    names = [labels.step(step) for step in steps] + [t(lang, "analytics.lost")]
    colours = [ACCENT if step == KEY_STAGE else MAIN for step in steps] + [LOST]
    positions = list(range(len(counts)))[::-1]
    axes.barh(positions, counts, color=colours)
    axes.set_yticks(positions, names)
    axes.set_xticks([])
    axes.spines["bottom"].set_visible(False)
    widest = max(counts) or 1
    for position, count in zip(positions, counts):
        text = number(count, lang) + (f" · {percent(count / total.arrived, lang)}" if total.arrived and position != positions[0] else "")
        axes.text(count + widest * 0.01, position, text, va="center", fontsize=13)
    axes.set_xlim(0, widest * 1.3)
    axes.set_title(t(lang, "analytics.charts.funnel", first=short_day(report.period.first, lang), last=short_day(report.period.last, lang)))
    return _save(figure, fmt)


def conversion(rows: list[Row], dimension: str, labels: Labels, fmt: str = "png") -> bytes:
    """The key stage's share in each group of a breakdown (small groups paler and flagged)."""
    lang = labels.lang
    figure, axes = _figure()
    shown = [row for row in rows if row.counts.arrived][:MAX_GROUPS]
    title = "analytics.charts.sources" if dimension == "source" else "analytics.charts.by"
    axes.set_title(t(lang, title, dimension=labels.dimension(dimension)))
    if not shown:
        _empty(axes, labels)
        return _save(figure, fmt)
    positions = list(range(len(shown)))[::-1]
    rates = [rate(row.counts) * 100 for row in shown]
    axes.barh(positions, rates, color=[MUTED if small(row.counts.arrived) else ACCENT for row in shown])
    axes.set_yticks(positions, [labels.key(dimension, row.key) for row in shown])
    top = max(rates) or 1
    for position, value, row in zip(positions, rates, shown):
        axes.text(value + top * 0.01, position, share(row.counts.key, row.counts.arrived, lang), va="center", fontsize=12)
    axes.set_xlim(0, top * 1.8)
    axes.set_xlabel(t(lang, "analytics.charts.conversion", stage=labels.step(KEY_STAGE)) + ", %")
    return _save(figure, fmt)


def managers(report: Report, labels: Labels, fmt: str = "png") -> bytes:
    """How soon each manager answered buyers' questions: shares of answers within 1, 5, 15, 60 minutes, 4 hours, later."""
    lang = labels.lang
    figure, axes = _figure()
    axes.set_title(t(lang, "analytics.charts.managers"))
    rows = [(m, m.all) for m in report.managers if m.all is not None]
    if not rows:
        _empty(axes, labels)
        return _save(figure, fmt)
    names = [m.name or t(lang, "analytics.charts.team") for m, _ in rows]
    positions = list(range(len(rows)))[::-1]
    left = [0.0] * len(rows)
    for index, (bucket, colour) in enumerate(zip(raw(lang, "analytics.buckets"), BUCKET_COLOURS)):
        shares = [m.buckets[index] / answered.n * 100 for m, answered in rows]
        axes.barh(positions, shares, left=left, color=colour, label=bucket)
        left = [a + b for a, b in zip(left, shares)]
    axes.set_yticks(positions, names)
    for position, (_, answered) in zip(positions, rows):
        axes.text(101, position, number(answered.n, lang), va="center", fontsize=11)
    axes.set_xlim(0, 110)
    axes.set_xlabel(t(lang, "analytics.charts.answers") + ", %")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=len(RESPONSE_BUCKETS) + 1, fontsize=10, frameon=False)
    return _save(figure, fmt)


def days(report: Report, labels: Labels, fmt: str = "png") -> bytes:
    """New leads per day, stacked by how they arrived (one shape per path: fast for 90 days and more)."""
    lang = labels.lang
    figure, axes = _figure()
    axes.set_title(t(lang, "analytics.charts.days"))
    if not any(paths for _, paths in report.days):
        _empty(axes, labels)
        return _save(figure, fmt)
    bottom = [0] * len(report.days)
    for path, colour in PATH_COLOURS.items():
        heights = [paths.get(path, 0) for _, paths in report.days]
        if any(heights):
            boxes = [[(x - 0.42, low), (x - 0.42, low + h), (x + 0.42, low + h), (x + 0.42, low)]
                     for x, (low, h) in enumerate(zip(bottom, heights)) if h]
            axes.add_collection(PolyCollection(boxes, facecolors=colour, edgecolors="none", label=labels.path(path)))
            bottom = [a + b for a, b in zip(bottom, heights)]
    axes.set_xlim(-0.7, len(report.days) - 0.3)
    axes.set_ylim(0, max(bottom) * 1.1)
    step = max(1, len(report.days) // 10)
    axes.set_xticks(range(0, len(report.days), step), [short_day(day, lang) for day, _ in report.days][::step])
    axes.set_ylabel(t(lang, "analytics.charts.leads"))
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=len(PATH_COLOURS), fontsize=11, frameon=False)
    return _save(figure, fmt)


def draw(name: str, report: Report, labels: Labels, fmt: str = "png") -> bytes:
    """One of :data:`REPORT_CHARTS`."""
    if name == "sources":
        return conversion(report.breakdowns.get("source", []), "source", labels, fmt)
    return {"funnel": funnel, "managers": managers, "days": days}[name](report, labels, fmt)


def report_charts(report: Report, labels: Labels, fmt: str = "png") -> list[bytes]:
    return [draw(name, report, labels, fmt) for name in REPORT_CHARTS]
