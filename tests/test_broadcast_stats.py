"""What a broadcast achieved: replies, unsubscribes and conversions are credited to it."""
from __future__ import annotations

from bot.app import App
from bot.db.models import Lead
from bot.journal import CRM_STAGE_CHANGED
from bot.sandbox.telegram import TelegramSandbox
from tests.broadcast_support import add_leads, bapp, broadcast_settings, clock, create, until_done  # noqa: F401  (fixtures)
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
    await bapp.order.idle()

    stats = await bapp.broadcasts.campaigns.stats(broadcast_id)
    assert (stats.total.replies, stats.total.unsubscribes, stats.total.conversions) == (1, 1, 1)
    assert stats.total.states["sent"] == 4
