"""Where leads come from: the Marquiz webhook + deep link, an ad link, a shared phone, a cold /start."""
from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import func, select

from bot.app import App
from bot.db.base import utcnow
from bot.db.models import Lead, LeadEvent, QuizSubmission
from bot.sandbox.telegram import TelegramSandbox
from tests.buyer import Buyer, buttons
from tests.conftest import SECRET

MARQUIZ = {
    "contacts": {"name": "Анна Петрова", "phone": "79991234567", "email": "anna@example.ru"},
    "quiz": {"id": "65a1b2c3d4e5f60718293a4b", "name": "Подбор оптовой партии"},
    "answers": [
        {"q": "Какая категория товаров вас интересует?", "a": ["Обувь"]},
        {"q": "Какой объём закупки планируете?", "a": "100–300 тыс ₽"},
        {"q": "Где вы продаёте?", "a": "Маркетплейсы"},
        {"q": "Ваш город доставки?", "a": "Казань"},
    ],
    "extra": {"utm": {"source": "yandex", "medium": "cpc", "name": "shoes_opt"}, "href": "https://opt.example.ru/quiz"},
    "created": "2026-11-26T10:00:00.000Z",
}


async def post_marquiz(app: App, body: object, *, secret: str = SECRET, content_type: str = "application/json") -> httpx.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body, ensure_ascii=False)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as client:
        return await client.post(f"/webhooks/marquiz/{secret}", content=data, headers={"Content-Type": content_type})


def payload_of(start_link: str) -> str:
    prefix = "https://t.me/optobot_sandbox_bot?start="
    assert start_link.startswith(prefix), start_link
    return start_link[len(prefix):]


async def count(app: App, model: type) -> int:
    await app.inbox.idle()
    async with app.db() as session:
        return (await session.execute(select(func.count()).select_from(model))).scalar_one()


async def test_quiz_webhook_then_deep_link_greets_by_name_and_interests(app: App, buyer: Buyer) -> None:
    response = await post_marquiz(app, MARQUIZ)
    assert response.status_code == 200, response.text
    body = response.json()
    payload = payload_of(body["start_link"])
    assert len(payload) <= 64 and all(ch.isalnum() or ch in "_-" for ch in payload)

    buyer.send(f"/start {payload}")
    greeting = await buyer.reply()

    assert greeting["text"].startswith("Анна, здравствуйте! Спасибо за ответы: вас интересует обувь, "
                                       "объём закупки 100–300 тыс ₽, город доставки — Казань.")
    labels = [text for text, _ in buttons(greeting)]
    assert any("каталог" in label for label in labels)
    assert any("Перезвоните" in label for label in labels)
    assert any("вопрос" in label for label in labels)
    await app.inbox.idle()
    async with app.db() as session:
        lead = await session.get(Lead, body["lead_id"])
        assert lead.tg_user_id == buyer.id
        assert lead.phone == "+79991234567"
        assert lead.interests == {"category": ["shoes"], "volume": "100to300k", "channel": "marketplaces", "city": "Казань"}
        assert lead.utm["name"] == "shoes_opt" and lead.source == "yandex"
        assert lead.stage == "qualified"


async def test_same_submission_twice_makes_one_lead(app: App) -> None:
    first = (await post_marquiz(app, MARQUIZ)).json()
    second = (await post_marquiz(app, MARQUIZ)).json()
    assert first["lead_id"] == second["lead_id"]
    assert second["duplicate"] is True and first["duplicate"] is False
    assert first["start_link"] == second["start_link"]
    assert await count(app, Lead) == 1
    assert await count(app, QuizSubmission) == 1


async def test_form_encoded_variant_and_unknown_answers_are_kept(app: App) -> None:
    form = urlencode(
        [
            ("contacts[name]", "Олег"), ("contacts[phone]", "89035550011"),
            ("answers[0][q]", "Какая категория товаров вас интересует?"), ("answers[0][a][]", "Мужская одежда"),
            ("answers[0][a][]", "Аксессуары"), ("answers[1][q]", "Откуда вы о нас узнали?"), ("answers[1][a]", "Выставка"),
            ("quiz[id]", "q1"), ("created", "2026-11-26T11:00:00Z"),
        ]
    )
    response = await post_marquiz(app, form, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200, response.text
    await app.inbox.idle()
    async with app.db() as session:
        submission = (await session.execute(select(QuizSubmission))).scalar_one()
        assert submission.answers == {"category": ["men", "accessories"]}
        assert submission.unknown == [{"q": "Откуда вы о нас узнали?", "a": ["Выставка"]}]
        assert "Выставка" in submission.raw_body or "%D0" in submission.raw_body
        lead = await session.get(Lead, submission.lead_id)
        assert lead.phone == "+79035550011" and lead.first_name == "Олег"


async def test_ad_link_records_source_and_runs_the_quiz(app: App, buyer: Buyer) -> None:
    buyer.send("/start yandex__cpc__shoes_spring")
    intro, question = await buyer.replies(2)
    assert "здравствуйте" in intro["text"]
    assert question["text"].startswith("Вопрос 1 из 4. Какая категория товаров вас интересует?")

    buyer.click("Обувь")
    buyer.click("Аксессуары")
    buyer.click("Обувь")  # un-tick
    buyer.click("Обувь")
    buyer.click("Готово")
    assert (await buyer.reply())["text"].startswith("Вопрос 2 из 4")
    buyer.click("300 тыс – 1 млн ₽")
    assert (await buyer.reply())["text"].startswith("Вопрос 3 из 4")
    buyer.click("Свой магазин")
    assert (await buyer.reply())["text"].startswith("Вопрос 4 из 4")
    buyer.send("Екатеринбург")
    done = await buyer.reply()

    assert "вас интересуют обувь и аксессуары, объём закупки 300 тыс – 1 млн ₽, город доставки — Екатеринбург" in done["text"]
    assert any("каталог" in text for text, _ in buttons(done))
    await app.inbox.idle()
    async with app.db() as session:
        lead = (await session.execute(select(Lead).where(Lead.tg_user_id == buyer.id))).scalar_one()
        assert lead.source == "yandex"
        assert lead.utm == {"source": "yandex", "medium": "cpc", "campaign": "shoes_spring"}
        assert lead.interests == {"category": ["shoes", "accessories"], "volume": "300kto1m", "channel": "own_store", "city": "Екатеринбург"}
        kinds = (await session.execute(select(LeadEvent.kind).where(LeadEvent.lead_id == lead.id).order_by(LeadEvent.id))).scalars().all()
        assert kinds[:2] == ["lead_created", "greeted"] and "quiz_completed" in kinds


async def test_answered_question_loses_its_keyboard(app: App, buyer: Buyer, sandbox) -> None:
    buyer.send("/start")
    _, first_question = await buyer.replies(2)
    buyer.click("Женская одежда")
    await sandbox.wait_for_call("editMessageReplyMarkup")
    assert "✅ Женская одежда" in [text for text, _ in buttons(first_question)]
    buyer.click("Готово")
    assert (await buyer.reply())["text"].startswith("Вопрос 2 из 4")
    assert buttons(first_question) == []  # the sandbox keeps the live message: no stale taps possible


async def test_shared_phone_links_the_website_quiz(app: App, sandbox) -> None:
    await post_marquiz(app, MARQUIZ)
    buyer = Buyer(sandbox, 2002, "Anya")  # Telegram name differs from the quiz name
    buyer.send("/start")
    await buyer.replies(2)
    buyer.share_phone("+7 (999) 123-45-67")
    found, greeting = await buyer.replies(2)

    assert "Нашёл вашу заявку" in found["text"]
    assert greeting["text"].startswith("Анна, здравствуйте! Спасибо за ответы: вас интересует обувь")
    await app.inbox.idle()
    async with app.db() as session:
        lead = (await session.execute(select(Lead).where(Lead.tg_user_id == buyer.id))).scalar_one()
        assert lead.interests["category"] == ["shoes"] and lead.first_name == "Анна"
        submission = (await session.execute(select(QuizSubmission).where(QuizSubmission.source == "marquiz"))).scalar_one()
        assert submission.claimed_by_tg_user_id == buyer.id and submission.lead_id == lead.id


async def test_someone_elses_contact_is_refused(app: App, buyer: Buyer) -> None:
    await post_marquiz(app, MARQUIZ)
    buyer.send("/start")
    await buyer.replies(2)
    buyer.share_phone("+79991234567", own=False)
    refusal = await buyer.reply()
    assert "свой номер" in refusal["text"]
    await app.inbox.idle()
    async with app.db() as session:
        submission = (await session.execute(select(QuizSubmission))).scalar_one()
        assert submission.claimed_by_tg_user_id is None


@pytest.mark.parametrize("payload", ["q_forged0000000000000000000000000000", "q_", "q_" + "A" * 62])
async def test_forged_start_payload_is_a_cold_start(app: App, buyer: Buyer, payload: str) -> None:
    await post_marquiz(app, MARQUIZ)
    buyer.send(f"/start {payload}")
    intro, question = await buyer.replies(2)
    assert "Спасибо за ответы" not in intro["text"] and question["text"].startswith("Вопрос 1 из 4")


async def test_expired_or_taken_token_is_never_someone_elses_lead(app: App, buyer: Buyer, sandbox) -> None:
    link = (await post_marquiz(app, MARQUIZ)).json()["start_link"]
    payload = payload_of(link)
    owner = Buyer(sandbox, 3003, "Анна")
    owner.send(f"/start {payload}")
    assert "Анна, здравствуйте" in (await owner.reply())["text"]

    buyer.send(f"/start {payload}")  # the link forwarded to someone else
    intro, _ = await buyer.replies(2)
    assert "Спасибо за ответы" not in intro["text"]

    other = (await post_marquiz(app, {**MARQUIZ, "created": "2026-01-01T00:00:00Z"})).json()
    await app.inbox.idle()
    async with app.db.begin() as session:
        submission = (await session.execute(select(QuizSubmission).where(QuizSubmission.lead_id == other["lead_id"], QuizSubmission.created_at > utcnow() - timedelta(minutes=5)).order_by(QuizSubmission.id.desc()))).scalars().first()
        submission.created_at = utcnow() - timedelta(days=31)
    late = Buyer(sandbox, 4004, "Late")
    late.send(f"/start {payload_of(other['start_link'])}")
    intro, _ = await late.replies(2)
    assert "Спасибо за ответы" not in intro["text"]


async def test_returning_lead_is_welcomed_back(app: App, buyer: Buyer) -> None:
    body = (await post_marquiz(app, MARQUIZ)).json()
    buyer.send(f"/start {payload_of(body['start_link'])}")
    await buyer.reply()
    buyer.send("/start")
    again = await buyer.reply()
    assert again["text"].startswith("Анна, с возвращением!")
    assert await count(app, Lead) == 1


async def test_a_token_opened_by_several_users_at_once_is_one_users(app: App, sandbox: TelegramSandbox) -> None:
    token = payload_of((await post_marquiz(app, MARQUIZ)).json()["start_link"])
    guests = [Buyer(sandbox, user_id=2000 + index, first_name=f"Гость{index}") for index in range(3)]
    for guest in guests:
        guest.send(f"/start {token}")
    greetings = [(await guest.reply())["text"] for guest in guests]

    owners = [guest for guest, text in zip(guests, greetings) if text.startswith("Анна, здравствуйте!")]
    assert len(owners) == 1, greetings  # the others get a cold start
    owners[0].send(f"/start {token}")  # its owner may open the link again
    assert (await owners[0].reply())["text"].startswith("Анна, с возвращением!")
    assert await count(app, Lead) == 3
