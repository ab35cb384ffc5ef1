"""No takeover by a typed phone (issue 9, defect 3): only a contact shared by its owner links a website quiz."""
from __future__ import annotations

from sqlalchemy import select

from bot.app import App
from bot.db.models import Lead, QuizSubmission
from bot.sandbox.telegram import TelegramSandbox
from tests import relay_support
from tests.buyer import Buyer
from tests.relay_support import IVAN, Team, open_topic
from tests.test_journey_arrival import MARQUIZ, payload_of, post_marquiz

settings = relay_support.settings  # the app gets the operator chat: a manager offers the test batch
team = relay_support.team


async def test_a_typed_phone_takes_over_nothing_and_the_victims_link_still_works(
        app: App, sandbox: TelegramSandbox, team: Team) -> None:
    victim_quiz = (await post_marquiz(app, MARQUIZ)).json()  # Анна's website quiz; she has not opened the bot
    attacker = Buyer(sandbox, 6006, "Мошенник")
    opened = await open_topic(app, attacker, team, first_name="Мошенник", last_name=None, phone=None, interests={},
                              crm_lead_id=None, tg_username=None)
    team.say(IVAN, opened.thread, "/test")  # any button that leads to the phone step
    await attacker.reply()
    attacker.click("Перезвоните")
    assert "Оставьте номер" in (await attacker.reply())["text"]
    attacker.send("+7 (999) 123-45-67")  # the victim's phone, typed

    answer = await attacker.reply()
    assert answer["text"].startswith("Менеджер перезвонит вам по номеру +79991234567")
    assert "Нашёл" not in answer["text"] and "Анна" not in answer["text"]
    assert len(sandbox.messages(attacker.id, from_bot=True)) == 4  # thanks, offer, ask, confirmation: no greeting by her name
    await app.inbox.idle()
    async with app.db() as session:
        submission = (await session.execute(select(QuizSubmission))).scalar_one()
        intruder = await session.get(Lead, opened.lead_id)
        assert submission.claimed_by_tg_user_id is None and submission.lead_id == victim_quiz["lead_id"]
        assert (intruder.first_name, intruder.interests, intruder.phone, intruder.phone_typed) == ("Мошенник", {}, "+79991234567", True)
        assert intruder.merged_into_id is None and (await session.get(Lead, victim_quiz["lead_id"])).merged_into_id is None

    later = (await post_marquiz(app, {**MARQUIZ, "created": "2026-02-01T00:00:00Z"})).json()
    assert later["lead_id"] == victim_quiz["lead_id"]  # her next quiz is hers, not filed under the newer lead's typed phone

    victim = Buyer(sandbox, 6007, "Аня")
    victim.send(f"/start {payload_of(victim_quiz['start_link'])}")
    assert (await victim.reply())["text"].startswith("Анна, здравствуйте! Спасибо за ответы: вас интересует обувь")

