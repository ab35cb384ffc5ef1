"""Broadcasts and sequences in the report: per broadcast, A/B variant and sequence step, against the holdout."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.analytics.labels import Labels
from bot.analytics.period import Period
from bot.analytics.report import build
from bot.analytics.summary import broadcast_lines
from bot.analytics.tables import broadcasts as broadcast_table
from bot.config import DEFAULT_QUIZ
from bot.db.models import Lead
from bot.quiz import load_quiz
from broadcasts.models import BLOCKED, FINISHED, HOLDOUT, ONEOFF, RUNNING, SENT, STEP, Broadcast, Delivery, Enrollment
from tests.analytics_support import MOSCOW, TODAY, moment
from tests.crm_support import db  # noqa: F401  (a fixture: the migrated database)

QUIZ = load_quiz(DEFAULT_QUIZ)


async def test_figures_per_broadcast_variant_and_step_against_the_holdout(db: async_sessionmaker[AsyncSession]) -> None:
    sent = now = moment(2, 12)
    async with db.begin() as session:
        leads = [Lead(tg_user_id=3000 + i, first_name=f"Л{i}", created_at=moment(30, 10)) for i in range(14)]
        session.add_all(leads)
        campaign = Broadcast(name="Скидка на тестовую", kind=ONEOFF, state=FINISHED, started_at=now)
        old = Broadcast(name="Прошлый месяц", kind=ONEOFF, state=FINISHED, started_at=moment(40, 12))
        step = Broadcast(name="Прогрев: bestsellers", kind=STEP, state=RUNNING, sequence="warmup", step="bestsellers", started_at=moment(60, 12))
        session.add_all([campaign, old, step])
        await session.flush()
        rows = [("A", SENT, True, True), ("A", SENT, False, True), ("A", SENT, False, False), ("A", BLOCKED, False, False),
                ("B", SENT, False, False), ("B", SENT, True, False),
                (HOLDOUT, HOLDOUT, False, True), (HOLDOUT, HOLDOUT, False, False), (HOLDOUT, HOLDOUT, False, False), (HOLDOUT, HOLDOUT, True, False)]
        for lead, (variant, state, replied, converted) in zip(leads, rows):
            session.add(Delivery(broadcast_id=campaign.id, lead_id=lead.id, variant=variant, state=state, sent_at=sent if state != BLOCKED else None,
                                 replied_at=sent if replied else None, converted_at=sent if converted else None))
        session.add(Delivery(broadcast_id=old.id, lead_id=leads[0].id, state=SENT, sent_at=moment(40, 12), converted_at=moment(39, 12)))
        for lead, entered in ((leads[10], moment(3, 9)), (leads[11], moment(1, 9)), (leads[12], moment(20, 9))):  # the last entered long ago
            session.add(Enrollment(sequence="warmup", lead_id=lead.id, entered_at=entered))
            session.add(Delivery(broadcast_id=step.id, lead_id=lead.id, state=SENT, sent_at=entered + timedelta(days=1),
                                 unsubscribed_at=entered + timedelta(days=1) if lead is leads[11] else None))

    report = await build(db, QUIZ, Period(TODAY - timedelta(days=6), TODAY, MOSCOW))
    assert [row.info.name for row in report.broadcasts] == ["Прогрев: bestsellers", "Скидка на тестовую"]
    sequence, oneoff = report.broadcasts
    assert [(f.variant, f.recipients, f.delivered, f.unsubscribed) for f in sequence.variants] == [("A", 2, 2, 1)]
    by_variant = {f.variant: (f.recipients, f.delivered, f.blocked, f.replied, f.converted, f.reached) for f in oneoff.variants}
    assert by_variant == {"A": (4, 3, 1, 1, 2, 3), "B": (2, 2, 0, 1, 0, 2), HOLDOUT: (4, 0, 0, 1, 1, 4)}
    total = oneoff.total
    assert (total.recipients, total.delivered, total.replied, total.converted) == (6, 5, 2, 2)

    labels = Labels("ru", QUIZ, {})
    line = next(line for line in broadcast_lines(report, labels) if "Скидка" in line).replace("\xa0", " ")
    assert line == ("«Скидка на тестовую»: доставлено 5 из 6 — 83 %*, ответили 2 из 5 — 40 %*, ключевой этап за 7 дней 2 из 5 — 40 %*"
                    " · у контрольной группы 1 из 4 — 25 %* (z = 0,5, разница пока не значима)")
    table = broadcast_table(report, labels)
    rows = [(row[1], row[3], row[7]) for row in table.rows if "Скидка" in row[0]]
    assert rows == [("A", (3, 4), (2, 3)), ("B", (2, 2), (0, 2)), ("Всего", (5, 6), (2, 5)), ("Контрольная группа", (0, 4), (1, 4))]
