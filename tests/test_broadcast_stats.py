"""What a broadcast achieved: replies, unsubscribes and conversions are credited to it."""
from __future__ import annotations

from sqlalchemy import select

from bot.app import App
from bot.db.models import Lead
from bot.journal import CRM_STAGE_CHANGED
from bot.sandbox.telegram import TelegramSandbox
from broadcasts.stats import report
from tests.broadcast_support import add_leads, bapp, broadcast, broadcast_settings, clock, create, deliveries, until_done  # noqa: F401  (fixtures)
from tests.buyer import buttons


async def test_replies_unsubscribes_and_conversions_are_credited(bapp: App, sandbox: TelegramSandbox) -> None:
    replier, leaver, buyer, silent = await add_leads(bapp, sandbox, 4)
    broadcast_id = await create(bapp)
    await until_done(bapp, broadcast_id)

    sandbox.send_text(5000, "Интересно, пришлите прайс")  # a reply goes to the managers (and counts)
    await sandbox.wait_for_messages(5000, 2)
    offer = sandbox.last(5001)
    sandbox.click(5001, offer, next(data for label, data in buttons(offer) if "Отписаться" in label))
    await sandbox.wait_for_messages(5001, 2)
    async with bapp.db.begin() as session:  # a manager moved the third buyer to «Тестовая партия отправлена»
        lead = await session.get(Lead, buyer)
        await bapp.journal.event(session, lead, CRM_STAGE_CHANGED, stage="test_batch_sent", previous="catalog_sent")
    await bapp.inbox.idle()

    stats = await bapp.broadcasts.campaigns.stats(broadcast_id)
    assert (stats.total.replies, stats.total.unsubscribes, stats.total.conversions) == (1, 1, 1)
    assert stats.total.states["sent"] == 4


async def test_a_holdout_gets_nothing_and_is_measured_like_the_recipients(bapp: App, sandbox: TelegramSandbox) -> None:
    leads = await add_leads(bapp, sandbox, 40)
    broadcast_id = await create(bapp, holdout=50)
    await until_done(bapp, broadcast_id)
    rows = await deliveries(bapp, broadcast_id)
    held = [row.lead_id for row in rows if row.state == "holdout"]
    sent = [row.lead_id for row in rows if row.state == "sent"]
    assert 8 <= len(held) <= 32 and len(held) + len(sent) == 40 and all(row.variant == "holdout" for row in rows if row.lead_id in held)
    users = {lead_id: 5000 + index for index, lead_id in enumerate(leads)}
    assert all(sandbox.messages(users[lead_id], from_bot=True) == [] for lead_id in held)  # nothing went to the holdout

    async with bapp.db.begin() as session:  # one buyer of each group reaches the key stage; one held-out buyer writes
        for lead_id in (held[0], sent[0], held[1]):
            lead = await session.get(Lead, lead_id)
            await bapp.journal.event(session, lead, CRM_STAGE_CHANGED, stage="test_batch_sent", previous="catalog_sent")
    sandbox.send_text(users[held[2]], "Добрый день, пришлите прайс")
    await sandbox.wait_for_messages(users[held[2]], 1)
    await bapp.inbox.idle()

    stats = await bapp.broadcasts.campaigns.stats(broadcast_id)
    assert (stats.holdout.reached, stats.holdout.conversions, stats.holdout.replies) == (len(held), 2, 1)
    assert (stats.total.recipients, stats.total.conversions) == (len(sent), 1)
    text = report("ru", stats, "Europe/Moscow")
    assert f"Контрольная группа (не получали): {len(held)} · ответы 1" in text and "конверсии 2" in text
    assert (await broadcast(bapp, broadcast_id)).total == len(sent)
    async with bapp.db() as session:  # the control group counts as reached: the next campaigns leave it alone too
        stamped = (await session.execute(select(Lead.last_broadcast_at).where(Lead.id.in_(held)))).scalars().all()
    assert len(stamped) == len(held) and None not in stamped
