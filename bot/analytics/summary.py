"""The report as Telegram HTML: the summary under /report and the weekly digest, and one breakdown's table."""
from __future__ import annotations

from bot.analytics.figures import FLAG, cost, day, decimal, money, number, percent, points, share, small
from bot.analytics.labels import Labels
from bot.analytics.queries import BOT_STEPS, CRM_STEPS, Counts, Filters, Quantiles
from bot.analytics.report import Report, Row
from bot.funnel import KEY_STAGE
from bot.proportions import Z_95, z_score
from bot.texts import duration, plural, t

TOP = 5  # groups of a breakdown shown in the summary
TOP_BROADCASTS = 3


def rate(counts: Counts) -> float:
    return counts.key / counts.arrived if counts.arrived else 0.0


def filters_text(filters: Filters, labels: Labels) -> str:
    parts = [f"{labels.dimension(name)} = {value}" for name, value in
             (("source", filters.source), ("medium", filters.medium), ("campaign", filters.campaign), ("language", filters.language))
             if value is not None]
    if filters.path is not None:
        parts.append(f"{labels.dimension('path')} = {labels.path(filters.path)}")
    if filters.managers is not None:
        names = sorted({labels.managers.get(i, f"#{i}") for i in filters.managers})
        parts.append(f"{labels.dimension('manager')} = {', '.join(names) or '—'}")
    parts += [f"{labels.dimension(key)} = {labels.key(key, option)}" for key, option in filters.answers]
    return "; ".join(parts)


def head_lines(report: Report, labels: Labels, digest: bool = False) -> list[str]:
    lang, period = labels.lang, report.period
    values = {"first": day(period.first, lang), "last": day(period.last, lang), "zone": period.zone.key}
    lines = [t(lang, "analytics.digest_title", **values) if digest else
             t(lang, "analytics.title", days=plural(lang, "analytics.days", period.days), **values)]
    if report.filters.active:
        lines.append(t(lang, "analytics.filtered", filters=filters_text(report.filters, labels)))
    total, before = report.total, report.previous
    lines += ["", t(lang, "analytics.key", stage=labels.step(KEY_STAGE), share=share(total.key, total.arrived, lang))]
    lines.append(t(lang, "analytics.key_before", share=share(before.key, before.arrived, lang), change=points(rate(total), rate(before), lang)))
    if report.time_to_key is not None:
        lines.append(t(lang, "analytics.key_time", p50=duration(report.time_to_key.p50, lang), p90=duration(report.time_to_key.p90, lang)))
    return lines


def funnel_lines(report: Report, labels: Labels) -> list[str]:
    lang, total = labels.lang, report.total
    arrivals: dict[str, int] = {}
    for _, paths in report.days:
        for path, n in paths.items():
            arrivals[path] = arrivals.get(path, 0) + n
    paths = ", ".join(t(lang, "analytics.path_part", path=labels.path(path), count=number(n, lang))
                      for path, n in sorted(arrivals.items(), key=lambda item: -item[1]))
    lines = ["", t(lang, "analytics.funnel_title"), t(lang, "analytics.arrived_line", total=number(total.arrived, lang), paths=paths or "—")]
    lines += [t(lang, "analytics.step_line", step=labels.step(step), share=share(total.steps[step], total.arrived, lang))
              for step in (*BOT_STEPS, *CRM_STEPS)]
    lines.append(t(lang, "analytics.lost_line", lost=t(lang, "analytics.lost"), count=number(total.lost, lang)))
    return lines


def group_lines(rows: list[Row], dimension: str, labels: Labels) -> list[str]:
    lang = labels.lang
    lines = ["", t(lang, "analytics.by_title", dimension=labels.dimension(dimension))]
    for row in rows[:TOP]:
        lines.append(t(lang, "analytics.by_line", key=labels.key(dimension, row.key), share=share(row.counts.key, row.counts.arrived, lang),
                       cost=cost(row.spend, row.counts.key, lang)))
    if len(rows) > TOP:
        lines.append(t(lang, "analytics.more", count=len(rows) - TOP))
    return lines


def speed_lines(report: Report, labels: Labels) -> list[str]:
    lang = labels.lang
    lines = ["", t(lang, "analytics.speed_title")]
    bot = report.first_replies.get("*")
    if bot is None:
        lines.append(t(lang, "analytics.bot_none"))
    else:
        lines.append(t(lang, "analytics.bot_line", p50=duration(bot.p50 / 1000, lang), p95=duration(bot.p95 / 1000, lang),
                       max=duration(bot.max / 1000, lang), leads=plural(lang, "analytics.leads", bot.n)))
    team = report.team
    if team is None or team.all is None:
        lines.append(t(lang, "analytics.team_none"))
    else:
        lines.append(t(lang, "analytics.team_line", p50=duration(team.all.p50, lang), p90=duration(team.all.p90, lang),
                       questions=plural(lang, "analytics.questions", team.all.n)))
        lines.append(t(lang, "analytics.team_hours", inside=pair(team.in_hours, lang), outside=pair(team.off_hours, lang)))
    pings = sum(p for p, _ in report.breaches.values())
    escalations = sum(e for _, e in report.breaches.values())
    waiting = number(report.waiting, lang)
    if report.waiting_since is not None:
        since = (report.generated_at - report.waiting_since).total_seconds()
        waiting += f" ({t(lang, 'analytics.waiting_since', duration=duration(since, lang))})"
    lines.append(t(lang, "analytics.control_line", breaches=number(pings, lang), escalations=number(escalations, lang), waiting=waiting))
    lines.append(t(lang, "analytics.no_task_off") if report.without_task is None else
                 t(lang, "analytics.no_task_line", count=number(report.without_task, lang)))
    return lines


def pair(quantiles: Quantiles | None, lang: str) -> str:
    """``3 мин / 12 мин``: the median and p90."""
    return t(lang, "analytics.pair", p50=duration(quantiles.p50, lang), p90=duration(quantiles.p90, lang)) if quantiles else "—"


def romi(revenue: int, spend: int | None, lang: str) -> str:
    return percent((revenue - spend) / spend, lang) if spend else "—"


def money_lines(report: Report, labels: Labels) -> list[str]:
    lang, total, spend = labels.lang, report.total, report.spend
    lines = ["", t(lang, "analytics.money_title")]
    if not spend:
        lines.append(t(lang, "analytics.no_spend" if spend is not None else "analytics.spend_unknown"))
        if total.revenue:
            lines.append(t(lang, "analytics.revenue_only", revenue=money(total.revenue, lang)))
        return lines
    lines.append(t(lang, "analytics.spend_line", spend=money(spend, lang), lead=cost(spend, total.arrived, lang),
                   catalog=cost(spend, total.steps["catalog_sent"], lang), test=cost(spend, total.key, lang),
                   main=cost(spend, total.sold, lang)))
    lines.append(t(lang, "analytics.revenue_line", revenue=money(total.revenue, lang), romi=romi(total.revenue, spend, lang)))
    return lines


def broadcast_lines(report: Report, labels: Labels) -> list[str]:
    lang = labels.lang
    if not report.broadcasts:
        return []
    lines = ["", t(lang, "analytics.broadcasts_title")]
    for row in report.broadcasts[:TOP_BROADCASTS]:
        total, control = row.total, row.holdout
        line = t(lang, "analytics.broadcast_line", name=row.info.name, delivered=share(total.delivered, total.recipients, lang),
                 replied=share(total.replied, total.delivered, lang), converted=share(total.converted, total.delivered, lang))
        if control is not None:
            z = z_score(total.converted, total.delivered, control.converted, control.reached)
            line += t(lang, "analytics.holdout_part", converted=share(control.converted, control.reached, lang), z=decimal(z, lang),
                      verdict=t(lang, "analytics.significant" if abs(z) >= Z_95 else "analytics.not_significant"))
        lines.append(line)
    if len(report.broadcasts) > TOP_BROADCASTS:
        lines.append(t(lang, "analytics.more", count=len(report.broadcasts) - TOP_BROADCASTS))
    return lines


def _flagged(report: Report) -> bool:
    rows = [row for rows in report.breakdowns.values() for row in rows[:TOP]]
    return small(report.total.arrived) or small(report.previous.arrived) or any(small(row.counts.arrived) for row in rows)


def summary(report: Report, labels: Labels, *, digest: bool = False) -> str:
    """The report in one Telegram message (well under 4096 characters)."""
    lines = head_lines(report, labels, digest) + funnel_lines(report, labels)
    for dimension, rows in report.breakdowns.items():
        lines += group_lines(rows, dimension, labels)
    lines += speed_lines(report, labels) + money_lines(report, labels) + broadcast_lines(report, labels)
    if _flagged(report):
        lines += ["", t(labels.lang, "analytics.small_note")]
    return "\n".join(lines)


def breakdown(report: Report, dimension: str, labels: Labels, limit: int = 25) -> str:
    """One breakdown as a Telegram message: each group's key stage, losses and cost per test batch."""
    lang, period = labels.lang, report.period
    lines = [t(lang, "analytics.breakdown_title", dimension=labels.dimension(dimension), first=day(period.first, lang),
               last=day(period.last, lang)), t(lang, "analytics.breakdown_head")]
    rows = report.breakdowns.get(dimension, [])
    for row in rows[:limit]:
        lines.append(t(lang, "analytics.breakdown_line", key=labels.key(dimension, row.key), share=share(row.counts.key, row.counts.arrived, lang),
                       lost=number(row.counts.lost, lang), cost=cost(row.spend, row.counts.key, lang)))
    if len(rows) > limit:
        lines.append(t(lang, "analytics.more", count=len(rows) - limit))
    if any(FLAG in line for line in lines):
        lines += ["", t(lang, "analytics.small_note")]
    return "\n".join(lines)
