"""Warm-up sequences: the shipped «catalogue sent → +1 d → +3 d → +7 d» sequence, exits, once-only steps."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from bot.app import App
from bot.config import PROJECT_DIR
from bot.db.models import Lead, LeadEvent
from bot.db.session import open_database
from bot.journal import CATALOG_SENT
from bot.sandbox.telegram import TelegramSandbox
from broadcasts.models import Broadcast, Delivery, Enrollment
from broadcasts.service import Broadcasts
from tests.broadcast_support import FakeClock, add_leads, bapp, broadcast_settings, clock  # noqa: F401
from tests.buyer import Buyer, buttons
from tests.test_journey_catalog import pdf_text

QUIET_OFF = pytest.mark.parametrize("broadcast_settings", [{"QUIET_HOURS": ""}])
REACTIVATION = PROJECT_DIR / "broadcasts" / "examples" / "sequence_reactivation.yaml"


async def record(app: App, lead_id: int, kind: str, **data: object) -> datetime:
    """A journal event, as the journey or the CRM records it; returns its time."""
    async with app.db.begin() as session:
        lead = await session.get(Lead, lead_id)
        return (await app.journal.event(session, lead, kind, **data)).created_at


async def enrollment(app: App, lead_id: int) -> Enrollment | None:
    async with app.db() as session:
        return (await session.execute(select(Enrollment).where(Enrollment.lead_id == lead_id))).scalar_one_or_none()


async def steps(app: App, lead_id: int) -> dict[str, str]:
    """Step key → delivery state for the lead."""
    async with app.db() as session:
        query = select(Broadcast.step, Delivery.state).join(Delivery, Delivery.broadcast_id == Broadcast.id).where(Delivery.lead_id == lead_id)
        return dict((await session.execute(query)).all())


def bot_texts(sandbox: TelegramSandbox, user_id: int) -> list[str]:
    return [m.get("text") or m.get("caption") or "" for m in sandbox.messages(user_id, from_bot=True)]


@QUIET_OFF
async def test_catalogue_then_bestsellers_test_offer_and_call_task_each_once(bapp: App, sandbox: TelegramSandbox, clock: FakeClock) -> None:
    async with bapp.db.begin() as session:
        lead = Lead(first_name="Анна", interests={"category": ["shoes"], "volume": "100to300k", "channel": "marketplaces", "city": "Казань"},
                    stage="qualified", phone="+79991234567")
        session.add(lead)
    buyer = Buyer(sandbox, user_id=1001, first_name="Анна")
    async with bapp.db.begin() as session:
        (await session.get(Lead, lead.id)).tg_user_id = buyer.id
    buyer.send("/start")
    await buyer.reply()
    buyer.click("каталог")  # the journey renders and sends the catalogue: the sequence's entry event
    await buyer.replies(3)
    entered = (await enrollment(bapp, lead.id)).entered_at
    shown = len(bot_texts(sandbox, buyer.id))

    clock.now = entered + timedelta(hours=23)
    await bapp.broadcasts.tick()
    assert len(bot_texts(sandbox, buyer.id)) == shown  # not yet

    clock.now = entered + timedelta(days=1, minutes=1)
    await bapp.broadcasts.tick()
    await bapp.broadcasts.tick()
    bestsellers = sandbox.messages(buyer.id, from_bot=True)[shown:]
    assert len(bestsellers) == 1 and bestsellers[0]["text"].startswith("Анна, собрали самые ходовые позиции в категории «Обувь»")
    assert "отмечены «Хит продаж»" in bestsellers[0]["text"] and bestsellers[0]["text"].endswith("Прислать каталог?")
    assert [label for label, _ in buttons(bestsellers[0])] == ["📄 Каталог с хитами продаж", "❓ Задать вопрос", "🔕 Отписаться от рассылки"]
    await buyer.reply()
    buyer.click("Каталог с хитами")  # the button sends what it names: the catalogue, its bestsellers marked
    document, _, _ = await buyer.replies(3, timeout=30)
    assert "ХИТ ПРОДАЖ" in pdf_text(sandbox, document).upper()
    shown += 3

    restarted = Broadcasts(bapp.settings, bapp.db, bapp.journal, bapp.quiz, clock=clock)  # a restart: a new engine and owner
    clock.now = entered + timedelta(days=3, minutes=1)
    try:
        await restarted.tick()
        await restarted.tick()
    finally:
        await restarted.close()
    offers = sandbox.messages(buyer.id, from_bot=True)[shown + 1:]
    assert len(offers) == 1 and "тестовую партию" in offers[0]["text"] and "доставкой в Казань" in offers[0]["text"]

    clock.now = entered + timedelta(days=7, minutes=1)
    await bapp.broadcasts.tick()
    await bapp.broadcasts.tick()
    assert await steps(bapp, lead.id) == {"bestsellers": "sent", "test_offer": "sent", "call_reminder": "sent"}
    async with bapp.db() as session:
        tasks = (await session.execute(select(LeadEvent.data).where(LeadEvent.kind == "drip_call_reminder"))).scalars().all()
    assert tasks == [{"sequence": "warmup", "step": "call_reminder"}]
    assert (await enrollment(bapp, lead.id)).state == "done"
    assert len(bot_texts(sandbox, buyer.id)) == shown + 2

    await record(bapp, lead.id, CATALOG_SENT)  # catalogue sent again: re-entry is ignored
    clock.now += timedelta(days=8)
    await bapp.broadcasts.tick()
    assert len(bot_texts(sandbox, buyer.id)) == shown + 2


@QUIET_OFF
async def test_two_instances_ticking_at_once_send_each_step_once(bapp: App, sandbox: TelegramSandbox, clock: FakeClock) -> None:
    """Two instances' broadcast workers (each its own engine) run the sequences at the same moments: every lead gets
    each step's message once, and each call task is recorded once."""
    lead_ids = await add_leads(bapp, sandbox, 6)
    entered = max([await record(bapp, lead_id, CATALOG_SENT) for lead_id in lead_ids])
    other_db = open_database(bapp.settings.database_url)
    other = Broadcasts(bapp.settings, other_db, bapp.journal, bapp.quiz, clock=clock)
    try:
        for days in (1, 3, 7):
            clock.now = entered + timedelta(days=days, minutes=1)
            await asyncio.gather(bapp.broadcasts.tick(), other.tick(), bapp.broadcasts.tick(), other.tick())
    finally:
        await other.close()
        await other_db.close()
    assert [await steps(bapp, lead_id) for lead_id in lead_ids] == [
        {"bestsellers": "sent", "test_offer": "sent", "call_reminder": "sent"}] * len(lead_ids)
    assert [len(bot_texts(sandbox, 5000 + index)) for index in range(len(lead_ids))] == [2] * len(lead_ids)
    async with bapp.db() as session:
        tasks = (await session.execute(select(LeadEvent.lead_id).where(LeadEvent.kind == "drip_call_reminder"))).scalars().all()
    assert sorted(tasks) == lead_ids


@QUIET_OFF
async def test_a_reply_ends_the_sequence(bapp: App, sandbox: TelegramSandbox, clock: FakeClock) -> None:
    [lead_id] = await add_leads(bapp, sandbox, 1)
    entered = await record(bapp, lead_id, CATALOG_SENT)
    sandbox.send_text(5000, "А есть 46 размер?")
    await sandbox.wait_for_messages(5000, 1)  # the journey acknowledges the question
    clock.now = entered + timedelta(days=8)
    await bapp.broadcasts.tick()
    ended = await enrollment(bapp, lead_id)
    assert (ended.state, ended.exit_reason) == ("exited", "replied")
    assert await steps(bapp, lead_id) == {}


@QUIET_OFF
async def test_a_stage_change_or_a_manager_ends_the_sequence(bapp: App, sandbox: TelegramSandbox, clock: FakeClock) -> None:
    first, second, third = await add_leads(bapp, sandbox, 3)
    entered = [await record(bapp, lead_id, CATALOG_SENT) for lead_id in (first, second, third)]
    clock.now = max(entered) + timedelta(days=1, minutes=1)
    await bapp.broadcasts.tick()
    assert [(await steps(bapp, i)).get("bestsellers") for i in (first, second, third)] == ["sent"] * 3

    async with bapp.db.begin() as session:  # amoCRM moved the deal (as bot/crm/webhooks.py records it)
        lead = await session.get(Lead, first)
        lead.stage = "test_batch_sent"
        await bapp.journal.event(session, lead, "crm_stage_changed", stage="test_batch_sent", previous="catalog_sent")
    async with bapp.db.begin() as session:
        lead = await session.get(Lead, second)
        await bapp.journal.message(session, lead, direction="out", author="manager", text="Добрый день! Я ваш менеджер.")
        (await session.get(Lead, third)).stage = "test_batch_sent"  # moved without an event: noticed when the step falls due
    clock.now = max(entered) + timedelta(days=8)
    await bapp.broadcasts.tick()
    reasons = [(await enrollment(bapp, i)).exit_reason for i in (first, second, third)]
    assert reasons == ["stage:test_batch_sent", "manager", "stage:test_batch_sent"]
    assert [await steps(bapp, i) for i in (first, second, third)] == [{"bestsellers": "sent"}] * 3
    async with bapp.db() as session:
        step_id = (await session.execute(select(Broadcast.id).where(Broadcast.step == "bestsellers"))).scalar_one()
    s = await bapp.broadcasts.campaigns.stats(step_id)
    assert (s.total.states["sent"], s.total.conversions) == (3, 1)  # the first reached «Тестовая партия отправлена» in 7 days


@QUIET_OFF
async def test_a_step_whose_filter_fails_is_skipped_not_sent(bapp: App, sandbox: TelegramSandbox, clock: FakeClock) -> None:
    [lead_id] = await add_leads(bapp, sandbox, 1)
    entered = await record(bapp, lead_id, CATALOG_SENT)
    async with bapp.db.begin() as session:
        (await session.get(Lead, lead_id)).test_batch_requested_at = entered  # the test offer's segment excludes them
    clock.now = entered + timedelta(days=3, minutes=1)
    await bapp.broadcasts.tick()
    assert await steps(bapp, lead_id) == {"bestsellers": "sent", "test_offer": "skipped"}
    assert len(bot_texts(sandbox, 5000)) == 1


@pytest.mark.parametrize("broadcast_settings", [{"QUIET_HOURS": "", "BROADCAST_SEQUENCES": str(REACTIVATION)}])
async def test_a_tag_enters_a_sequence_whose_steps_have_their_own_filters(bapp: App, sandbox: TelegramSandbox, clock: FakeClock) -> None:
    tagged, untagged = await add_leads(bapp, sandbox, 2)
    async with bapp.db.begin() as session:
        (await session.get(Lead, tagged)).tags = ["reactivate"]  # set in amoCRM
    entered = [await record(bapp, lead_id, "phone_shared") for lead_id in (tagged, untagged)][0]
    assert (await enrollment(bapp, tagged)).state == "active" and await enrollment(bapp, untagged) is None

    clock.now = entered + timedelta(days=2, minutes=1)
    await bapp.broadcasts.tick()
    assert bot_texts(sandbox, 5000) == ["Покупатель0, давно не общались! Обновили ассортимент и цены — прислать свежий каталог?"]
    clock.now = entered + timedelta(days=5, minutes=1)
    await bapp.broadcasts.tick()
    assert await steps(bapp, tagged) == {"nudge": "sent", "call": "sent"} and (await enrollment(bapp, tagged)).state == "done"
