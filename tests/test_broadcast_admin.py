"""The admin UI end to end over the sandbox, and the buyer's side: tracked buttons, /stop, the unsubscribe button, /start."""
from __future__ import annotations

import asyncio
import copy
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from bot.app import App
from bot.db.models import Lead, LeadEvent
from bot.db.session import open_database
from bot.sandbox.telegram import TelegramSandbox
from broadcasts.admin import WizardCb
from broadcasts.models import Broadcast
from broadcasts.progress import LEASE, ControlCb, Progress
from tests.broadcast_support import (  # noqa: F401  (fixtures)
    ADMIN,
    FakeClock,
    add_leads,
    bapp,
    broadcast,
    broadcast_settings,
    clock,
    create,
    states,
    until_done,
)
from tests.buyer import buttons
from tests.conftest import all_handled

MEMBER, GROUP = 778, -1002000000001  # a member of the admins' group who is no admin


class Admin:
    """The admin in a private chat with the bot (or in the group ``chat_id``)."""

    def __init__(self, sandbox: TelegramSandbox, chat_id: int = ADMIN) -> None:
        self.sandbox, self.chat_id = sandbox, chat_id
        sandbox.add_user(ADMIN, "Ольга", started=True)

    def last(self) -> dict[str, Any]:
        return self.sandbox.last(self.chat_id)

    async def says(self, text: str, count: int = 1) -> dict[str, Any]:
        """Write ``text``; the ``count``-th bot message that follows."""
        seen = len(self.sandbox.messages(self.chat_id, from_bot=True))
        self.sandbox.send_text(ADMIN, text, chat_id=None if self.chat_id == ADMIN else self.chat_id)
        return (await self.sandbox.wait_for_messages(self.chat_id, seen + count))[seen + count - 1]

    def newest_with(self, callback_data: str) -> dict[str, Any]:
        """The newest message of the bot's with the button ``callback_data``."""
        return next(m for m in reversed(self.sandbox.messages(self.chat_id, from_bot=True)) if callback_data in dict(buttons(m)).values())

    async def presses(self, callback_data: str, *, answer: str | None = None) -> dict[str, Any]:
        """Press a button of the newest message that has it; waits for the bot's answer to the press."""
        started = time.perf_counter()
        message = self.newest_with(callback_data)
        self.sandbox.click(ADMIN, message, callback_data)
        await self.sandbox.wait_for_call("answerCallbackQuery", since=started)
        return message


async def test_wizard_builds_previews_sends_and_reports(bapp: App, sandbox: TelegramSandbox) -> None:
    await add_leads(bapp, sandbox, 3)
    await add_leads(bapp, sandbox, 1, first_id=6000, interests={"category": ["women"]})
    admin = Admin(sandbox)

    panel = await admin.says("/broadcast")
    assert "В сегменте сейчас: 4" in panel["text"]
    await admin.presses("bw:category:shoes")
    assert "В сегменте сейчас: 3" in panel["text"] and "✅ Обувь" in dict(buttons(panel)).keys().__str__()
    await admin.presses("bw:next:")
    assert "Пришлите сообщение" in panel["text"]

    seen = len(sandbox.messages(ADMIN, from_bot=True))
    sandbox.send_media(ADMIN, "photo", caption="Новинки для {{ first_name }}!")
    [buttons_panel] = (await sandbox.wait_for_messages(ADMIN, seen + 1))[seen:]
    await admin.presses("bw:add:test")
    assert "Хочу тестовую партию" in buttons_panel["text"]
    await admin.presses("bw:next:")
    preview, review = (await sandbox.wait_for_messages(ADMIN, seen + 3))[seen + 1:]
    assert preview["caption"] == "Новинки для Покупатель0!" and "photo" in preview
    assert [label for label, _ in buttons(preview)] == ["📦 Хочу тестовую партию", "🔕 Отписаться от рассылки"]
    assert "Получателей: 3" in review["text"]
    await admin.presses("bw:now:")
    assert "сейчас" in review["text"]
    await admin.presses("bw:confirm:")
    assert review["text"].startswith("Рассылка #1 создана")

    await until_done(bapp, 1)
    for user_id in (5000, 5001, 5002):
        [got] = sandbox.messages(user_id, from_bot=True)
        assert got["caption"].startswith("Новинки для Покупатель") and "photo" in got
    assert sandbox.messages(6000, from_bot=True) == []

    await bapp.broadcasts.progress.update()  # the wizard's message is now the progress message
    assert "завершена" in review["text"] and "▰▰▰▰▰▰▰▰▰▰▰▰ 100%" in review["text"] and "доставлено 3" in review["text"]

    sandbox.click(5000, sandbox.last(5000), next(data for label, data in buttons(sandbox.last(5000)) if "тестовую" in label))
    assert "Тестовая партия" in (await sandbox.wait_for_messages(5000, 2))[1]["text"]  # the journey's test-batch form
    sandbox.click(5001, sandbox.last(5001), next(data for label, data in buttons(sandbox.last(5001)) if "Отписаться" in label))
    assert "Вы отписались" in (await sandbox.wait_for_messages(5001, 2))[1]["text"]

    sandbox.send_text(5002, "А размеры 36–41 есть?")  # a reply to the broadcast: the operators get it as any question
    await sandbox.wait_for_messages(5002, 2)

    listing = await admin.says("/broadcasts")
    assert "#1 «Новинки для {{ first_name }}!» — завершена, доставлено 3 из 3" in listing["text"]
    await admin.presses("bcc:stats:1")
    report = admin.last()["text"]
    assert "Клики: Тестовая партия 1, Отписка 1" in report and "Ответы за 48 ч: 1 · отписки: 1" in report


async def test_wizard_schedules_and_controls_pause_and_cancel(bapp: App, sandbox: TelegramSandbox, clock: FakeClock) -> None:
    await add_leads(bapp, sandbox, 2, catalog_sent_at=clock.now)
    await add_leads(bapp, sandbox, 1, first_id=6000)
    admin = Admin(sandbox)
    await admin.says("/broadcast")
    await admin.presses("bw:preset:1")  # «Got the catalogue, no test batch yet»
    await admin.presses("bw:next:")
    await admin.says("Скидка для {{ frist_name }}")
    seen = len(sandbox.messages(ADMIN, from_bot=True))
    await admin.presses("bw:next:")
    [refused] = (await sandbox.wait_for_messages(ADMIN, seen + 1))[seen:]
    assert "не прошло проверку у 2 получателей" in refused["text"] and "'frist_name' is undefined" in refused["text"]

    await admin.says("Скидка на тестовую партию до пятницы")
    seen = len(sandbox.messages(ADMIN, from_bot=True))
    await admin.presses("bw:next:")
    preview, review = (await sandbox.wait_for_messages(ADMIN, seen + 2))[seen:]
    assert preview["text"] == "Скидка на тестовую партию до пятницы" and "Получателей: 2" in review["text"]
    await admin.presses("bw:schedule:")
    assert "Когда отправить" in review["text"]
    assert "Не понял время" in (await admin.says("вчера"))["text"]
    confirm = await admin.says("2099-01-01 10:00")
    assert "01.01.2099 10:00" in confirm["text"]
    await admin.presses("bw:confirm:")
    scheduled = await broadcast(bapp, 1)
    assert scheduled.state == "scheduled" and scheduled.send_at.isoformat() == "2099-01-01T07:00:00+00:00"

    await bapp.broadcasts.progress.update()  # the progress message gets its controls
    await admin.presses("bcc:pause:1")
    assert (await broadcast(bapp, 1)).state == "paused"
    await admin.presses("bcc:resume:1")
    assert (await broadcast(bapp, 1)).state == "scheduled"  # paused before its time: back to waiting for it
    await admin.presses("bcc:cancel:1")
    assert (await broadcast(bapp, 1)).state == "cancelled"
    assert await bapp.broadcasts.tick() == {} and sandbox.messages(5000, from_bot=True) == []


async def test_only_admins_get_the_wizard(bapp: App, sandbox: TelegramSandbox) -> None:
    await add_leads(bapp, sandbox, 1)
    sandbox.send_text(5000, "/broadcast")
    [answer] = await sandbox.wait_for_messages(5000, 1)
    assert "Менеджер ответит" in answer["text"]  # just a question for the managers
    async with bapp.db() as session:
        assert (await session.execute(select(LeadEvent.kind).where(LeadEvent.kind == "question_asked"))).scalars().all() == ["question_asked"]


async def test_a_member_who_is_no_admin_cannot_press_the_wizards_controls(bapp: App, sandbox: TelegramSandbox) -> None:
    """In an admin group every member sees the wizard's panel and a broadcast's controls: a press by one who is not in
    ADMIN_IDS is refused with an alert and changes nothing (the panel, the admin's wizard, the broadcast); the admin's own press works."""
    await add_leads(bapp, sandbox, 2, catalog_sent_at=bapp.broadcasts.clock())
    admin = Admin(sandbox, GROUP)
    sandbox.add_user(MEMBER, "Пётр")
    sandbox.add_group(GROUP, "Рассылки", forum=False, members=[MEMBER], admins=[ADMIN])

    async def pressed_by_member(callback_data: str) -> None:
        message = admin.newest_with(callback_data)
        before = copy.deepcopy(message)
        query = sandbox.click(MEMBER, message, callback_data)
        await all_handled(bapp, sandbox)
        [answer] = [a for a in sandbox.callback_answers if a["callback_query_id"] == query["id"]]  # not his button: said so
        assert answer["show_alert"] and answer["text"] == "Эта кнопка не для вас или больше не действует."
        assert sandbox.last(GROUP) == before  # unchanged, and nothing new

    panel = await admin.says("/broadcast")
    for callback_data in (WizardCb(op="category", arg="shoes").pack(), WizardCb(op="abort").pack(), WizardCb(op="next").pack()):
        await pressed_by_member(callback_data)
    await admin.presses(WizardCb(op="preset", arg="1").pack())  # the admin's wizard is where it was
    await admin.presses(WizardCb(op="next").pack())
    await admin.says("Скидка на тестовую партию до пятницы")
    seen = len(sandbox.messages(GROUP, from_bot=True))
    await admin.presses(WizardCb(op="next").pack())
    await sandbox.wait_for_messages(GROUP, seen + 2)  # the preview and the review
    await admin.presses(WizardCb(op="schedule").pack())
    await admin.says("2099-01-01 10:00")
    await pressed_by_member(WizardCb(op="confirm").pack())
    assert await bapp.broadcasts.campaigns.recent(10) == []
    await admin.presses(WizardCb(op="confirm").pack())
    assert (await broadcast(bapp, 1)).state == "scheduled"

    await bapp.broadcasts.progress.update()  # the wizard's message is the progress message, with its controls
    for action in ("pause", "cancel"):
        await pressed_by_member(ControlCb(action=action, id=1).pack())
    assert (await broadcast(bapp, 1)).state == "scheduled"
    await admin.presses(ControlCb(action="cancel", id=1).pack())
    assert (await broadcast(bapp, 1)).state == "cancelled"


async def test_stop_opts_out_of_all_marketing_and_start_opts_back_in(bapp: App, sandbox: TelegramSandbox) -> None:
    [lead_id] = await add_leads(bapp, sandbox, 1)
    sandbox.send_text(5000, "/stop")
    [confirmation] = await sandbox.wait_for_messages(5000, 1)
    assert "Вы отписались" in confirmation["text"]
    first = await create(bapp)
    await until_done(bapp, first)
    assert await states(bapp, first) == {}  # not in any segment

    sandbox.send_text(5000, "/start")
    await sandbox.wait_for_messages(5000, 2)
    second = await create(bapp, name="После /start")
    await until_done(bapp, second)
    assert await states(bapp, second) == {"sent": 1}
    async with bapp.db() as session:
        lead = await session.get(Lead, lead_id)
        kinds = (await session.execute(select(LeadEvent.kind).where(LeadEvent.lead_id == lead_id).order_by(LeadEvent.id))).scalars().all()
    assert lead.unsubscribed_at is None and kinds[:2] == ["unsubscribed", "resubscribed"]


async def test_wizard_names_a_recipient_it_will_skip_and_sends_to_the_rest(bapp: App, sandbox: TelegramSandbox) -> None:
    await add_leads(bapp, sandbox, 2)
    await add_leads(bapp, sandbox, 1, first_id=6000, interests={"category": ["shoes"], "city": "Санкт-Петербург" * 100})
    admin = Admin(sandbox)
    await admin.says("/broadcast")
    await admin.presses("bw:next:")
    seen = len(sandbox.messages(ADMIN, from_bot=True))
    sandbox.send_media(ADMIN, "photo", caption="Новинки для {{ first_name }}, доставка в {{ city }}!")
    await sandbox.wait_for_messages(ADMIN, seen + 1)
    await admin.presses("bw:next:")
    skipped, preview, review = (await sandbox.wait_for_messages(ADMIN, seen + 4))[seen + 1:]
    assert "Пропустим 1 получателя:" in skipped["text"] and "too long" in skipped["text"]
    assert preview["caption"] == "Новинки для Покупатель0, доставка в Казань!" and "Получателей: 3" in review["text"]
    await admin.presses("bw:now:")
    await admin.presses("bw:confirm:")
    await until_done(bapp, 1)
    assert await states(bapp, 1) == {"sent": 2, "skipped": 1}


async def test_two_instances_edit_a_progress_message_one_at_a_time(bapp: App, sandbox: TelegramSandbox, clock: FakeClock) -> None:
    """Both instances' progress loops see the figures change: one of them edits the message; the other takes over only
    once the first has not edited it for the lease (it stopped)."""
    await add_leads(bapp, sandbox, 3)
    sandbox.add_user(ADMIN, "Ольга", started=True)
    broadcast_id = await create(bapp)
    shown = await bapp.bot.send_message(ADMIN, "Рассылка готовится…")
    async with bapp.db.begin() as session:
        row = await session.get(Broadcast, broadcast_id)
        row.progress_chat_id, row.progress_message_id = ADMIN, shown.message_id
    other_db = open_database(bapp.settings.database_url)
    other = Progress(other_db, bapp.bot, bapp.broadcasts.rate, lang="ru", zone=bapp.settings.timezone, clock=clock)

    def edits() -> int:
        return sum(call.method == "editMessageText" for call in sandbox.calls)

    async def holder() -> str | None:
        async with bapp.db() as session:
            return (await session.get(Broadcast, broadcast_id)).progress_owner

    try:
        await asyncio.gather(bapp.broadcasts.progress.update(), other.update())
        assert edits() == 1
        editor = bapp.broadcasts.progress if await holder() == bapp.broadcasts.progress.owner else other
        await bapp.broadcasts.tick()  # the messages go: the figures change
        await asyncio.gather(bapp.broadcasts.progress.update(), other.update())
        assert edits() == 2 and await holder() == editor.owner
        clock.now += LEASE + timedelta(seconds=1)  # the editor stopped; the other one takes over
        survivor = other if editor is bapp.broadcasts.progress else bapp.broadcasts.progress
        await survivor.update()
        assert edits() == 3 and await holder() == survivor.owner
    finally:
        await other_db.close()
