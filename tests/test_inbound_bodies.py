"""Hostile and malformed webhook bodies: a 4xx with the reason, or the lead accepted with its values cleaned —
the same on SQLite and PostgreSQL, and never a traceback in the log."""
from __future__ import annotations

import asyncio
import json
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import func, select

from bot.app import App
from bot.bodies import MAX_BODY, MAX_FIELDS
from bot.db.models import Lead, LeadEvent, QuizSubmission, TestBatchRequest
from tests.buyer import Buyer
from tests.test_journey_arrival import MARQUIZ, post_marquiz


pytestmark = pytest.mark.usefixtures("no_tracebacks")  # tests/conftest.py


def nested(depth: int) -> str:
    return '{"contacts": {"name": "Анна", "phone": "79991234567"}, "extra": ' + "[" * depth + "]" * depth + "}"


def submission(**contacts: object) -> dict:
    return {**MARQUIZ, "contacts": {**MARQUIZ["contacts"], **contacts}}


async def stored(app: App, lead_id: int) -> tuple[Lead, QuizSubmission]:
    await app.inbox.idle()
    async with app.db() as session:
        lead = await session.get(Lead, lead_id)
        raw = (await session.execute(select(QuizSubmission).where(QuizSubmission.lead_id == lead_id))).scalar_one()
        return lead, raw


@pytest.mark.parametrize("depth", [40, 990, 5000])
async def test_deeply_nested_json_is_refused(app: App, depth: int) -> None:
    response = await post_marquiz(app, nested(depth))
    assert response.status_code == 400, response.text
    assert "nested" in response.json()["error"]


@pytest.mark.parametrize("depth", [40, 500, 3000])
async def test_deeply_nested_form_keys_are_refused(app: App, depth: int) -> None:
    body = urlencode([("contacts[name]", "Анна"), ("extra" + "[a]" * depth, "x")])
    response = await post_marquiz(app, body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400, response.text
    assert "nested" in response.json()["error"]


async def test_a_form_of_more_than_1000_fields_is_refused(app: App) -> None:
    fields = [("contacts[name]", "Анна"), ("contacts[phone]", "79991234567")]
    at_the_limit = fields + [(f"extra[f{i}]", "x") for i in range(MAX_FIELDS - len(fields))]
    accepted = await post_marquiz(app, urlencode(at_the_limit), content_type="application/x-www-form-urlencoded")
    over = await post_marquiz(app, urlencode([*at_the_limit, ("extra[one_more]", "x")]), content_type="application/x-www-form-urlencoded")
    assert accepted.status_code == 200, accepted.text
    assert over.status_code == 400 and over.json()["error"] == "more than 1000 form fields", over.text


async def test_a_body_one_byte_over_256_kb_gets_413(app: App) -> None:
    """A quiz submission of exactly 256 KB is taken; one byte more is refused before it is parsed."""
    def padded(size: int) -> bytes:
        body = json.dumps(submission(), ensure_ascii=False).encode()
        return body[:-1] + b', "padding": "' + b"x" * (size - len(body) - 15) + b'"}'

    assert len(padded(MAX_BODY)) == MAX_BODY == 256 * 1024
    at_the_limit = await post_marquiz(app, padded(MAX_BODY))
    over = await post_marquiz(app, padded(MAX_BODY + 1))
    assert at_the_limit.status_code == 200, at_the_limit.text
    assert over.status_code == 413 and over.json()["error"] == "body larger than 256 KB", over.text


async def test_nul_bytes_and_lone_surrogates_are_removed(app: App) -> None:
    body = {
        **submission(name="Ан\u0000на \ud800Петрова", email="a\u0000nna@example.ru"),
        "answers": [*MARQUIZ["answers"][:3], {"q": "Ваш город доставки?", "a": "Ка\u0000зань\udfff"},
                    {"q": "Откуда вы\u0000 о нас узнали?", "a": "Выста\ud83dвка"}],
        "extra": {"utm": {"source": "yan\u0000dex", "campaign": "\ud800x"}},
    }
    response = await post_marquiz(app, json.dumps(body))  # ASCII escapes, as a real client would send them
    assert response.status_code == 200, response.text
    lead, raw = await stored(app, response.json()["lead_id"])
    assert (lead.first_name, lead.last_name, lead.email) == ("Анна", "Петрова", "anna@example.ru")
    assert lead.interests["city"] == "Казань" and lead.source == "yandex" and lead.utm == {"source": "yandex", "campaign": "x"}
    assert raw.unknown == [{"q": "Откуда вы о нас узнали?", "a": ["Выставка"]}]
    assert "\\u0000" in raw.raw_body  # the submission as it arrived


async def test_values_longer_than_their_columns_are_cut_and_kept_whole_in_the_submission(app: App) -> None:
    name, email, source = "Я" * 1000, "a" * 990 + "@mail.ru", "s" * 500
    body = {**submission(name=name, email=email), "extra": {"utm": {"source": source}}}
    response = await post_marquiz(app, body)
    assert response.status_code == 200, response.text
    lead, raw = await stored(app, response.json()["lead_id"])
    size = {column: Lead.__table__.c[column].type.length for column in ("first_name", "email", "source")}
    assert lead.first_name == name[:size["first_name"]]
    assert lead.email == email[:size["email"]] and lead.source == source[:size["source"]]
    assert name in raw.raw_body and email in raw.raw_body and source in raw.raw_body


async def test_nul_bytes_in_a_form_body_are_removed(app: App) -> None:
    body = urlencode([("contacts[name]", "Ан\u0000на"), ("contacts[phone]", "79991234567"), ("answers[0][q]", "Ваш город доставки?"),
                      ("answers[0][a]", "Ка\u0000зань")])
    response = await post_marquiz(app, body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200, response.text
    lead, raw = await stored(app, response.json()["lead_id"])
    assert lead.first_name == "Анна" and lead.interests["city"] == "Казань"
    assert "%00" in raw.raw_body


async def test_multipart_form_data_is_parsed_as_a_form(app: App) -> None:
    fields = {"contacts[name]": "Олег", "contacts[phone]": "89035550011", "answers[0][q]": "Какая категория товаров вас интересует?",
              "answers[0][a][]": "Обувь", "quiz[id]": "q1", "created": "2026-11-26T11:00:00Z"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as client:
        response = await client.post(f"/webhooks/marquiz/{app.webhook_secret}", files={k: (None, v) for k, v in fields.items()})
    assert response.status_code == 200, response.text
    lead, raw = await stored(app, response.json()["lead_id"])
    assert lead.first_name == "Олег" and lead.phone == "+79035550011" and lead.interests["category"] == ["shoes"]
    assert raw.content_type == "multipart/form-data" and "Олег" in raw.raw_body


async def test_multipart_with_a_file_or_deep_keys_is_refused(app: App) -> None:
    url = f"/webhooks/marquiz/{app.webhook_secret}"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as client:
        deep = await client.post(url, files={"contacts[name]": (None, "Олег"), "x" + "[a]" * 600: (None, "y")})
        upload = await client.post(url, files={"contacts[name]": (None, "Олег"), "photo": ("me.jpg", b"\xff\xd8\x00", "image/jpeg")})
        garbage = await client.post(url, content=b"--x\r\nnot multipart", headers={"Content-Type": "multipart/form-data; boundary=zz"})
    assert deep.status_code == 400 and "nested" in deep.json()["error"]
    assert upload.status_code == 400 and "file" in upload.json()["error"]
    assert garbage.status_code == 400, garbage.text


async def test_other_content_types_are_refused_with_415(app: App) -> None:
    response = await post_marquiz(app, b"<xml/>", content_type="application/xml")
    assert response.status_code == 415 and "application/json" in response.json()["error"]


async def test_fifty_parallel_quizzes_with_one_phone_make_one_lead(app: App) -> None:
    bodies = [{**submission(name=f"Покупатель {i}", phone="+7 912 345-67-89"), "created": f"2026-11-26T10:00:{i:02d}Z"} for i in range(50)]
    responses = await asyncio.gather(*(post_marquiz(app, body) for body in bodies))
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["lead_id"] for r in responses}) == 1
    await app.inbox.idle()
    async with app.db() as session:
        assert (await session.execute(select(func.count()).select_from(Lead))).scalar_one() == 1
        assert (await session.execute(select(func.count()).select_from(QuizSubmission))).scalar_one() == 50
        created = select(func.count()).select_from(LeadEvent).where(LeadEvent.kind == "lead_created")
        assert (await session.execute(created)).scalar_one() == 1


async def test_what_a_buyer_types_in_telegram_is_stored_cleaned_and_cut(app: App, sandbox) -> None:
    buyer = Buyer(sandbox, 7007, "Н" * 100 + "\u0000", "Ф" * 100, username="u" * 32)  # names can hold anything
    buyer.send("/start " + "y" * 300 + "__cpc__" + "c" * 300)  # an ad link anyone can type
    await buyer.replies(2)
    buyer.click("Обувь")
    buyer.click("Готово")
    await buyer.reply()
    buyer.click("300 тыс – 1 млн ₽")
    await buyer.reply()
    buyer.click("Свой магазин")
    await buyer.reply()
    city = "Ка\u0000зань" + "ь" * 150
    buyer.send(city)
    assert "вас интересует обувь" in (await buyer.reply())["text"]
    buyer.click("каталог")
    await buyer.replies(3, timeout=30)
    buyer.click("тестовую партию")
    await buyer.reply()
    buyer.send("Кроссовки\u0000 " * 100)
    await buyer.reply()  # the phone
    buyer.send("+7 912 345-67-89")
    assert "принята" in (await buyer.reply())["text"]

    await app.inbox.idle()
    async with app.db() as session:
        lead = (await session.execute(select(Lead).where(Lead.tg_user_id == buyer.id))).scalar_one()
        request = (await session.execute(select(TestBatchRequest))).scalar_one()
    assert lead.first_name == "Н" * 100 and lead.last_name == "Ф" * 100
    assert lead.source == "y" * Lead.__table__.c.source.type.length and lead.utm["campaign"] == "c" * 300
    assert lead.interests["city"] == "Казань" + "ь" * 150  # NUL removed
    assert request.city == lead.interests["city"][:TestBatchRequest.__table__.c.city.type.length]
    assert "\u0000" not in request.assortment and request.assortment.startswith("Кроссовки Кроссовки")
