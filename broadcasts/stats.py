"""Per-broadcast and per-variant figures, the A/B winner, the holdout, and their text for the admin chat and the CLI."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from bot.proportions import Z_95, z_score
from bot.texts import plural, t
from broadcasts import store
from broadcasts.content import UNSUBSCRIBE
from broadcasts.models import BLOCKED, FAILED, HOLDOUT, PENDING, SCHEDULED, SENDING, SENT, SKIPPED, UNKNOWN, Broadcast


@dataclass
class Group:
    """The figures of one variant (or of all of them)."""

    name: str
    states: Counter[str] = field(default_factory=Counter)
    clicks: Counter[str] = field(default_factory=Counter)  # button → buyers who pressed it
    replies: int = 0
    unsubscribes: int = 0
    conversions: int = 0

    @property
    def recipients(self) -> int:
        return sum(self.states.values())

    @property
    def waiting(self) -> int:
        return self.states[PENDING] + self.states[SENDING]

    @property
    def done(self) -> int:
        return self.recipients - self.waiting

    def metric(self, by: str) -> int:
        if by == "clicks":
            return sum(n for button, n in self.clicks.items() if button != UNSUBSCRIBE)
        return self.replies if by == "replies" else self.conversions

    @property
    def reached(self) -> int:
        """Delivered to (or, in the holdout, kept from) — what the outcomes are counted out of."""
        return self.states[SENT] + self.states[HOLDOUT]

    def share(self, by: str) -> float:
        return self.metric(by) / self.reached if self.reached else 0.0

    def add(self, other: Group) -> None:
        self.states.update(other.states)
        self.clicks.update(other.clicks)
        self.replies += other.replies
        self.unsubscribes += other.unsubscribes
        self.conversions += other.conversions


@dataclass
class Winner:
    name: str
    by: str
    share: float
    z: float

    @property
    def significant(self) -> bool:
        return abs(self.z) >= Z_95


@dataclass
class Stats:
    broadcast: Broadcast
    total: Group  # everyone it was sent to (not the holdout)
    variants: list[Group]
    winner: Winner | None
    holdout: Group | None = None


def winner(variants: list[Group], by: str) -> Winner | None:
    """The variant with the best share of ``by``, and a two-proportion z-test against the runner-up."""
    ranked = sorted((g for g in variants if g.states[SENT]), key=lambda g: g.share(by), reverse=True)
    if len(ranked) < 2:
        return None
    best, second = ranked[0], ranked[1]
    return Winner(best.name, by, best.share(by), z_score(best.metric(by), best.states[SENT], second.metric(by), second.states[SENT]))


async def collect(session: AsyncSession, broadcast: Broadcast) -> Stats:
    groups: dict[str, Group] = {}
    for (variant, state), n in (await store.counts(session, broadcast.id)).items():
        groups.setdefault(variant, Group(variant)).states[state] += n
    for (variant, button), n in (await store.click_counts(session, broadcast.id)).items():
        groups.setdefault(variant, Group(variant)).clicks[button] += n
    for variant, (replies, unsubscribes, conversions) in (await store.outcome_counts(session, broadcast.id)).items():
        group = groups.setdefault(variant, Group(variant))
        group.replies, group.unsubscribes, group.conversions = replies, unsubscribes, conversions
    holdout = groups.pop(HOLDOUT, None)
    variants = [groups[name] for name in sorted(groups)]
    total = Group("all")
    for group in variants:
        total.add(group)
    by = broadcast.content.get("winner_by", "clicks")
    return Stats(broadcast, total, variants, winner(variants, by) if len(variants) > 1 else None, holdout)


def _percent(value: float) -> str:
    return f"{value * 100:.1f}%"


def _clicks(lang: str, clicks: Counter[str]) -> str:
    return ", ".join(f"{t(lang, f'broadcasts.buttons.{button}')} {n}" for button, n in sorted(clicks.items())) or "0"


def _when(moment: datetime | None, zone: str) -> str:
    return moment.astimezone(ZoneInfo(zone)).strftime("%d.%m.%Y %H:%M") if moment else "—"


def headline(lang: str, b: Broadcast, zone: str) -> str:
    line = t(lang, "broadcasts.report.title", id=b.id, name=b.name, state=t(lang, f"broadcasts.states.{b.state}"))
    if b.state == SCHEDULED:
        line += "\n" + t(lang, "broadcasts.report.scheduled", when=_when(b.send_at, zone), zone=zone)
    if b.note:
        line += "\n" + t(lang, "broadcasts.report.note", note=b.note)
    return line


def _counts(lang: str, g: Group) -> str:
    s = g.states
    return t(lang, "broadcasts.report.counts", recipients=plural(lang, "broadcasts.recipients", g.recipients), sent=s[SENT], blocked=s[BLOCKED], failed=s[FAILED],
             unknown=s[UNKNOWN], waiting=g.waiting, skipped=s[SKIPPED])


def report(lang: str, stats: Stats, zone: str) -> str:
    """The full statistics of a broadcast (Telegram HTML)."""
    b, total = stats.broadcast, stats.total
    lines = [headline(lang, b, zone), _counts(lang, total), t(lang, "broadcasts.report.clicks", clicks=_clicks(lang, total.clicks)),
             t(lang, "broadcasts.report.outcomes", replies=total.replies, unsubscribes=total.unsubscribes, conversions=total.conversions)]
    if len(stats.variants) > 1:
        for g in stats.variants:
            lines.append(t(lang, "broadcasts.report.variant", name=g.name, sent=g.states[SENT], blocked=g.states[BLOCKED],
                           failed=g.states[FAILED], clicks=g.metric("clicks"), click_rate=_percent(g.share("clicks")),
                           replies=g.replies, reply_rate=_percent(g.share("replies")), unsubscribes=g.unsubscribes,
                           conversions=g.conversions, conversion_rate=_percent(g.share("conversions"))))
        w = stats.winner
        if w is not None:
            verdict = t(lang, "broadcasts.report.significant" if w.significant else "broadcasts.report.not_significant")
            lines.append(t(lang, "broadcasts.report.winner", by=t(lang, f"broadcasts.metrics.{w.by}"), name=w.name,
                           share=_percent(w.share), z=f"{w.z:.2f}", verdict=verdict))
    if stats.holdout is not None:
        h = stats.holdout
        z = z_score(total.conversions, total.reached, h.conversions, h.reached)
        verdict = t(lang, "broadcasts.report.significant" if abs(z) >= Z_95 else "broadcasts.report.not_significant")
        lines.append(t(lang, "broadcasts.report.holdout", people=h.reached, replies=h.replies, reply_rate=_percent(h.share("replies")),
                       conversions=h.conversions, conversion_rate=_percent(h.share("conversions")),
                       sent_rate=_percent(total.share("conversions")), z=f"{z:.2f}", verdict=verdict))
    if b.errors:
        lines.append(t(lang, "broadcasts.report.errors") + "\n" + "\n".join(t(lang, "broadcasts.report.error", error=e) for e in b.errors))
    return "\n".join(lines)


def progress(lang: str, stats: Stats, rate: float | None, zone: str) -> str:
    """The live progress message: a bar, the rate, the time left and the counts."""
    total = stats.total
    share = total.done / total.recipients if total.recipients else (1.0 if stats.broadcast.prepared else 0.0)
    filled = round(share * 12)
    lines = [headline(lang, stats.broadcast, zone), f"{'▰' * filled}{'▱' * (12 - filled)} {share * 100:.0f}%"]
    if rate is not None and total.waiting:
        eta = total.waiting / rate if rate > 0 else None
        left = t(lang, "broadcasts.progress.eta", minutes=max(1, round(eta / 60))) if eta is not None else "—"
        lines.append(t(lang, "broadcasts.progress.rate", rate=f"{rate:.1f}", left=left))
    lines.append(_counts(lang, total))
    return "\n".join(lines)
