"""/report in Telegram: four chart images and the summary, its buttons (period, breakdown, PDF, XLSX),
admins only, in a private chat or the operator chat."""
from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook
from PIL import Image
from pypdf import PdfReader

from bot.app import App
from bot.catalog.render import CatalogRenderer
from bot.sandbox.telegram import TelegramSandbox
from tests.analytics_support import analytics_settings, seed_history
from tests.buyer import buttons
from tests.relay_support import IVAN, OLGA, OPERATORS, running

Msg = dict[str, Any]


@pytest.fixture
async def app(sandbox: TelegramSandbox, database_url: str, tmp_path: Path, renderer: CatalogRenderer) -> AsyncIterator[App]:
    async with running(analytics_settings(sandbox, database_url, tmp_path), renderer) as service:
        await seed_history(service.db)
        yield service


def image(sandbox: TelegramSandbox, message: Msg) -> Image.Image:
    """The photo of a message, opened (and so checked to be a real image)."""
    data = sandbox.files[message["photo"][-1]["file_id"]]
    picture = Image.open(io.BytesIO(data))
    picture.load()
    return picture


def plain(message: Msg) -> str:
    """A message's text with the non-breaking spaces of numbers (``12 345 ₽``) as plain spaces."""
    return message.get("text", "").replace("\xa0", " ")


def press(sandbox: TelegramSandbox, user: int, message: Msg, label: str) -> None:
    data = next(data for text, data in buttons(message) if label in text)
    sandbox.click(user, message, data)


async def test_report_sends_four_charts_and_the_summary(app: App, sandbox: TelegramSandbox) -> None:
    sandbox.send_text(OLGA, "/report 7")
    *charts, summary = await sandbox.wait_for_messages(OLGA, 5, timeout=60)
    assert len({chart["media_group_id"] for chart in charts}) == 1  # one album
    for chart in charts:
        picture = image(sandbox, chart)
        assert picture.format == "PNG" and picture.size[0] >= 1000 and 0.4 < picture.size[1] / picture.size[0] < 1
    text = plain(summary)
    assert text.startswith("📊 Отчёт за 7 дней")
    assert "Тестовая партия отправлена: 2 из 5 — 40 %*" in text  # the headline, with its denominator, flagged as small
    assert "прошлый период: 0 из 1 — 0 %* (+40 п.п.)" in text
    assert "от заявки до ключевого этапа: медиана 1 д 0 ч, p90 2 д 0 ч" in text
    assert "Пришли: 5 (анкета на сайте 2, рекламная ссылка 1, холодный старт 1, по телефону 1)" in text
    assert "→ Каталог отправлен: 1 из 5 — 20 %*" in text
    assert "vk: 1 из 2 — 50 %* · 1 500 ₽" in text and "yandex: 1 из 1 — 100 %* · 3 000 ₽" in text
    assert "Бот отвечает на первое сообщение: медиана 0,06 с, p95 0,2 с, максимум 0,2 с (4 лида)" in text
    assert "Менеджеры отвечают на вопрос: медиана 30 с, p90 12 ч 00 мин (2 вопроса)" in text
    assert "в рабочее время 30 с / 30 с, в нерабочее 12 ч 00 мин / 12 ч 00 мин" in text
    assert "Расход 4 500 ₽: лид 900 ₽ · каталог 4 500 ₽ · тестовая партия 2 250 ₽ · основная партия 4 500 ₽" in text
    assert "Выручка 150 000 ₽ · ROMI 3 233 %" in text
    assert "amoCRM не подключена" in text and "* меньше 30 случаев" in text
    labels = [label for label, _ in buttons(summary)]
    assert labels[:3] == ["• 7 дн.", "30 дн.", "90 дн."] and "📄 PDF" in labels and "📊 XLSX" in labels
    assert {"Источник", "Кампания", "Менеджер", "Какая категория товаров вас интересует?"} <= set(labels)


async def test_buttons_give_a_breakdown_a_pdf_a_spreadsheet_and_another_period(app: App, sandbox: TelegramSandbox) -> None:
    sandbox.send_text(OLGA, "/report 7 source=vk")
    summary = (await sandbox.wait_for_messages(OLGA, 5, timeout=60))[-1]
    assert "Фильтр: Источник = vk" in plain(summary) and "1 из 2 — 50 %*" in plain(summary)

    press(sandbox, OLGA, summary, "Кампания")
    chart, table = (await sandbox.wait_for_messages(OLGA, 7, timeout=60))[-2:]
    assert image(sandbox, chart).format == "PNG"
    assert plain(table).startswith("Кампания") and "spring: 1 из 2 — 50 %* · 1 · 1 500 ₽" in plain(table)  # still vk only

    press(sandbox, OLGA, summary, "PDF")
    document = (await sandbox.wait_for_messages(OLGA, 8, timeout=90))[-1]
    data = sandbox.files[document["document"]["file_id"]]
    assert data.startswith(b"%PDF-") and document["document"]["file_name"].endswith(".pdf")
    pdf = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages).replace("\xa0", " ")
    assert "Тестовая партия отправлена: 1 из 2 — 50 %*" in pdf and "Источник = vk" in pdf

    press(sandbox, OLGA, summary, "XLSX")
    document = (await sandbox.wait_for_messages(OLGA, 9, timeout=60))[-1]
    book = load_workbook(io.BytesIO(sandbox.files[document["document"]["file_id"]]))
    assert "Источник" in book.sheetnames and book["Источник"]["A2"].value == "vk"

    press(sandbox, OLGA, summary, "30 дн.")
    again = (await sandbox.wait_for_messages(OLGA, 14, timeout=60))[-1]
    assert plain(again).startswith("📊 Отчёт за 30 дней") and "Фильтр: Источник = vk" in plain(again)
    assert "Тестовая партия отправлена: 1 из 2 — 50 %*" in plain(again)  # the filter holds; Egor (9 days ago) has no source


async def test_only_admins_get_reports_in_their_chat_or_the_operator_chat(app: App, sandbox: TelegramSandbox) -> None:
    sandbox.send_text(IVAN, "/report")  # a manager, not an admin: the journey treats him as a buyer
    first = (await sandbox.wait_for_messages(IVAN, 1))[0]
    assert "Отчёт" not in first["text"]

    sandbox.send_text(OLGA, "/report", chat_id=OPERATORS)  # in the operator chat (where Ivan's question went too)
    [summary] = await sandbox.wait_for_messages(OPERATORS, 1, timeout=60, predicate=lambda m: m.get("text", "").startswith("📊"))
    assert plain(summary).startswith("📊 Отчёт за 30 дней")
    assert len(sandbox.messages(OPERATORS, from_bot=True, thread_id=summary.get("message_thread_id"))) >= 5  # the charts with it
    press(sandbox, IVAN, summary, "PDF")  # a manager who is no admin presses the admin's button
    answer = await sandbox.wait_for_call("answerCallbackQuery", predicate=lambda call: call.params.get("show_alert") in (True, "true"))
    assert answer.params["text"] == "Отчёты доступны администраторам (ADMIN_IDS)."

    sandbox.send_text(OLGA, "/report 7 colour=red")
    [refusal] = await sandbox.wait_for_messages(OLGA, 1)
    assert plain(refusal).startswith("Не понял «colour=red»: можно source=…, medium=…")
