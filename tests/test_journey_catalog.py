"""The catalogue, the test-batch request, and what bad input does to the intake."""
from __future__ import annotations

import io
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import httpx
import pytest
from pypdf import PdfReader
from sqlalchemy import select

from bot.app import App
from bot.db.models import CatalogRender, LeadEvent, TestBatchRequest
from tests.buyer import Buyer, buttons
from tests.conftest import SECRET
from tests.test_journey_arrival import MARQUIZ, payload_of, post_marquiz


async def arrive(app: App, buyer: Buyer, quiz: dict = MARQUIZ) -> dict:
    body = (await post_marquiz(app, quiz)).json()
    buyer.send(f"/start {payload_of(body['start_link'])}")
    return await buyer.reply()


def pdf_text(app_sandbox, message: dict) -> str:
    data = app_sandbox.files[message["document"]["file_id"]]
    assert data.startswith(b"%PDF-")
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


async def test_catalogue_is_personal_and_followed_by_the_test_batch_offer(app: App, buyer: Buyer, sandbox) -> None:
    await arrive(app, buyer)
    buyer.click("каталог")
    document, price_list, offer = await buyer.replies(3, timeout=30)

    assert document["document"]["mime_type"] == "application/pdf"
    assert price_list["document"]["file_name"] == "Прайс-лист ОптЛиния.xlsx" and "Прайс-лист Excel" in price_list["caption"]
    assert "Обувь" in document["caption"] and "100–300 тыс ₽" in document["caption"]
    text = pdf_text(sandbox, document)
    assert "Анна Петрова" in text and "Казань" in text and "Обувь" in text
    assert "тестовая партия" in offer["text"].lower()
    assert any("тестовую партию" in label for label, _ in buttons(offer))
    await app.inbox.idle()
    async with app.db() as session:
        kinds = (await session.execute(select(LeadEvent.kind))).scalars().all()
        assert "catalog_sent" in kinds


async def test_different_quizzes_give_different_catalogues(app: App, buyer: Buyer, sandbox) -> None:
    await arrive(app, buyer)
    buyer.click("каталог")
    first, _, _ = await buyer.replies(3, timeout=30)
    other = Buyer(sandbox, 5005, "Олег")
    quiz = {
        **MARQUIZ, "contacts": {"name": "Олег Смирнов", "phone": "79035550011"}, "created": "2026-11-26T12:00:00Z",
        "answers": [
            {"q": "Какая категория товаров вас интересует?", "a": ["Детская одежда"]},
            {"q": "Какой объём закупки планируете?", "a": "более 1 млн ₽"},
            {"q": "Ваш город доставки?", "a": "Новосибирск"},
        ],
    }
    await arrive(app, other, quiz)
    other.click("каталог")
    second, _, _ = await other.replies(3, timeout=30)

    first_text, second_text = pdf_text(sandbox, first), pdf_text(sandbox, second)
    assert "Олег Смирнов" in second_text and "Новосибирск" in second_text and "Анна Петрова" not in second_text
    assert first["document"]["file_id"] != second["document"]["file_id"]
    assert first_text != second_text


async def test_same_personalisation_is_resent_by_file_id(app: App, buyer: Buyer, sandbox) -> None:
    await arrive(app, buyer)
    buyer.click("каталог")
    first, first_list, _ = await buyer.replies(3, timeout=30)
    buyer.click("каталог")
    second, second_list, _ = await buyer.replies(3, timeout=30)

    uploads = [call for call in sandbox.calls if call.method.lower() == "senddocument"]
    assert len(uploads) == 4
    assert uploads[2].params["document"] == first["document"]["file_id"]  # no second upload of the PDF…
    assert uploads[3].params["document"] == first_list["document"]["file_id"]  # …nor of the price list
    assert second["document"]["file_id"] == first["document"]["file_id"]
    assert second_list["document"]["file_id"] == first_list["document"]["file_id"]
    await app.inbox.idle()
    async with app.db() as session:
        renders = (await session.execute(select(CatalogRender.file_id))).scalars().all()
        assert sorted(renders) == sorted([first["document"]["file_id"], first_list["document"]["file_id"]])


async def test_flood_wait_while_sending_the_pdf_is_retried_and_sent_once(app: App, buyer: Buyer, sandbox) -> None:
    await arrive(app, buyer)
    sandbox.fail_next("sendDocument", error_code=429, retry_after=1)
    buyer.click("каталог")
    document, _, _ = await buyer.replies(3, timeout=30)

    assert document["document"]["file_name"].startswith("Каталог ОптЛиния — ") and document["document"]["file_name"].endswith(".pdf")
    attempts = [call for call in sandbox.calls if call.method.lower() == "senddocument"]
    assert [call.ok for call in attempts] == [False, True, True]  # the PDF twice, then the price list
    assert len([m for m in sandbox.messages(buyer.id, from_bot=True) if "document" in m]) == 2


async def test_test_batch_request_collects_what_a_manager_needs(app: App, buyer: Buyer) -> None:
    quiz = {**MARQUIZ, "contacts": {"name": "Анна"}, "answers": MARQUIZ["answers"][:3], "created": "2026-11-26T13:00:00Z"}
    await arrive(app, buyer, quiz)  # no city, no phone in the quiz
    buyer.click("Перезвоните")
    assert "Оставьте номер" in (await buyer.reply())["text"]
    buyer.send("8 999 000-11-22")
    assert "+79990001122" in (await buyer.reply())["text"]

    buyer.click("каталог")
    await buyer.replies(3, timeout=30)
    buyer.click("тестовую партию")
    assert "Что хотите в неё включить" in (await buyer.reply())["text"]
    buyer.send("Кроссовки SH-101, 36–41, по 10 пар")
    assert "город" in (await buyer.reply())["text"]
    buyer.send("Самара")
    confirmation = await buyer.reply()

    assert "Кроссовки SH-101" in confirmation["text"] and "Самара" in confirmation["text"] and "+79990001122" in confirmation["text"]
    await app.inbox.idle()
    async with app.db() as session:
        request = (await session.execute(select(TestBatchRequest))).scalar_one()
        assert (request.assortment, request.city, request.phone) == ("Кроссовки SH-101, 36–41, по 10 пар", "Самара", "+79990001122")
        kinds = (await session.execute(select(LeadEvent.kind).order_by(LeadEvent.id))).scalars().all()
        assert kinds.count("callback_requested") == 1 and kinds[-1] == "test_batch_requested"


async def test_a_callback_is_promised_when_the_working_hours_allow_it(app: App, buyer: Buyer) -> None:
    await arrive(app, buyer)  # the website quiz has the phone; working hours 09:00-19:00 Mon-Fri, Moscow
    promised = []
    for local in ("2026-12-02 12:00", "2026-12-02 23:00", "2026-12-04 20:00"):  # Wednesday noon and night, Friday night
        moment = datetime.fromisoformat(local).replace(tzinfo=ZoneInfo("Europe/Moscow")).astimezone(timezone.utc)
        app.journey.replies.clock = lambda moment=moment: moment
        buyer.click("Перезвоните")
        promised.append((await buyer.reply())["text"])
    assert promised == [f"Менеджер перезвонит вам по номеру +79991234567 {when}." for when in
                        ("в течение 15 минут", "завтра после 9:00", "в понедельник после 9:00")]


async def test_html_in_the_name_is_escaped_in_the_message_and_the_pdf(app: App, buyer: Buyer, sandbox) -> None:
    evil = "<script>alert(1)</script> & <b>Co</b>"
    quiz = {**MARQUIZ, "contacts": {"name": evil, "phone": "79990002233"}, "created": "2026-11-26T14:00:00Z"}
    greeting = await arrive(app, buyer, quiz)
    assert greeting["text"].startswith("<script>alert(1)</script>")  # shown literally, parsed without error
    assert not [e for e in greeting.get("entities", []) if e["type"] in ("bold", "text_link", "code")]
    buyer.click("каталог")
    document, _, _ = await buyer.replies(3, timeout=30)
    assert "<script>alert(1)</script>" in pdf_text(sandbox, document)


@pytest.mark.parametrize(
    ("secret", "body", "content_type", "status"),
    [
        ("wrong-secret-0123456789", b"{}", "application/json", 404),
        (SECRET, b"{not json", "application/json", 400),
        (SECRET, b"[1, 2, 3]", "application/json", 400),
        (SECRET, b'{"contacts": "nope"}', "application/json", 400),
        (SECRET, b'{"answers": [{"a": "no question"}]}', "application/json", 400),
        (SECRET, b"{}", "application/json", 400),
        (SECRET, b"x" * (1024 * 1024), "application/json", 413),
    ],
)
async def test_bad_webhooks_get_a_clear_4xx(app: App, secret: str, body: bytes, content_type: str, status: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as client:
        response = await client.post(f"/webhooks/marquiz/{secret}", content=body, headers={"Content-Type": content_type})
    assert response.status_code == status, response.text
    assert response.json()["ok"] is False and response.json()["error"]
