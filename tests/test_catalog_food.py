"""The second sample supplier (samples/food: кг and packs, shelf life, its own categories, tiers and quiz) end to end over
the sandbox Bot API: the in-bot quiz → the greeting → the PDF with the buyer's categories and tier prices → the XLSX price
list with every product in stock at the buyer's tier. No code knows the sample's categories."""
from __future__ import annotations

import io
import re
from decimal import Decimal
from collections.abc import Iterator
from pathlib import Path

import pytest
from openpyxl import load_workbook
from pypdf import PdfReader

from bot.catalog.model import load_catalogue, mapping_problems
from bot.catalog.render import CatalogRenderer, CatalogRequest, render_pdf
from bot.config import SAMPLES_DIR
from bot.quiz import load_quiz
from bot.sandbox.telegram import TelegramSandbox
from tests.buyer import Buyer
from tests.conftest import make_settings, running

FOOD = SAMPLES_DIR / "food"


@pytest.fixture(scope="module")
def food_renderer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CatalogRenderer]:
    pool = CatalogRenderer(FOOD, tmp_path_factory.mktemp("food-catalogs"), workers=1)
    yield pool
    pool.close()


def test_the_food_sample_is_whole() -> None:
    catalogue = load_catalogue(FOOD)
    assert mapping_problems(catalogue, load_quiz(FOOD / "quiz.yaml")) == []
    assert {p.unit for p in catalogue.products} == {"kg", "packs"}
    assert all(any(param.name == "Срок годности" for param in p.params) for p in catalogue.products)
    assert all((FOOD / picture).is_file() for p in catalogue.products for picture in p.pictures)
    assert not set(c.id for c in catalogue.categories) & set(c.id for c in load_catalogue(SAMPLES_DIR / "clothing").categories)


def test_free_params_are_in_english_where_params_en_says_so() -> None:
    catalogue = load_catalogue(FOOD)
    buckwheat = next(p for p in catalogue.products if p.sku == "F-101")
    assert [catalogue.param_line(param, "ru") for param in buckwheat.params] == ["Срок годности: 12 мес.", "Страна: Россия"]
    assert [catalogue.param_line(param, "en") for param in buckwheat.params] == ["Shelf life: 12 months", "Country: Russia"]
    storage = next(param for p in catalogue.products for param in p.params if param.name == "Хранение")
    assert catalogue.param_line(storage, "en") == f"Storage: {storage.value}"  # a value it lacks: as written
    assert catalogue.model_copy(update={"params_en": {}}).param_line(storage, "en") == f"Хранение: {storage.value}"  # Russian fallback

    text = re.sub(r"\s+", " ", "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(render_pdf(
        CatalogRequest(name="Jane", categories=("cereals",), volume="medium", language="en", limit=2), FOOD))).pages))
    assert "Shelf life: 12 months" in text and "Country: Russia" in text and "Срок годности" not in text


async def test_a_food_buyer_gets_their_categories_at_their_tier(sandbox: TelegramSandbox, database_url: str, tmp_path: Path,
                                                                food_renderer: CatalogRenderer) -> None:
    settings = make_settings(sandbox, database_url, tmp_path, CATALOG_DIR=FOOD, QUIZ_CONFIG=FOOD / "quiz.yaml")
    catalogue = load_catalogue(FOOD)
    async with running(settings, food_renderer):
        buyer = Buyer(sandbox, user_id=7007, first_name="Ольга", last_name="Кузнецова")
        buyer.send("/start")
        await buyer.replies(2)  # the welcome and the first question
        for option in ("Бакалея", "Сладости", "Готово", "50–200 тыс ₽", "Магазин у дома"):
            buyer.click(option)
            if option not in ("Бакалея", "Сладости"):
                await buyer.reply()
        buyer.send("Омск")
        greeting = await buyer.reply()
        assert "вас интересуют бакалея и сладости" in greeting["text"]  # the answers as a sentence

        buyer.click("каталог")
        document, price_list, offer = await buyer.replies(3, timeout=60)

    pdf = sandbox.files[document["document"]["file_id"]]
    text = re.sub(r"\s+", " ", "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages))
    mine = [c for c in catalogue.categories if c.id in ("cereals", "oils", "sweets")]
    head = text.split("Другие категории")[0]
    for category in mine:
        assert category.name in head, category.name
    assert "Консервы" not in head  # not one of the buyer's categories: after «Другие категории»
    buckwheat = next(p for p in catalogue.products if p.sku == "F-101")
    assert buckwheat.prices["medium"] == Decimal("64.39")  # 68,50 ₽ less the tier's 6 %
    assert "Ваша цена 64,39 ₽ за кг" in text and "Срок годности: 12 мес." in text and "Фасовка: 1 кг, 5 кг, 25 кг" in text
    assert "тестов" in offer["text"].lower() and "Пробная поставка" in text  # the offer, and the food supplier's own terms

    sheet = load_workbook(io.BytesIO(sandbox.files[price_list["document"]["file_id"]])).active
    header, *rows = list(sheet.iter_rows(values_only=True))
    assert header[0] == "Артикул" and "50–200 тыс ₽" in header[7] and sheet.freeze_panes == "A2" and sheet.auto_filter.ref
    listed = {row[0]: row for row in rows}
    for product in catalogue.products:
        if product.in_stock:
            assert listed[product.sku][7] == pytest.approx(float(product.prices["medium"])), product.sku
    assert listed["F-105"][8] == "нет в наличии"
