"""The catalogue as data (bot/catalog/model.py): validation naming the item and field, prices from tier discounts,
currencies, the quiz → catalogue mapping and its problems reported at start and by ``optobot check``."""
from __future__ import annotations

import logging
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from bot.app import App
from bot.catalog.model import CatalogError, build, load_catalogue, mapping_problems
from bot.catalog.render import CatalogRenderer, CatalogRequest, _sections
from bot.config import DEFAULT_CATALOG_DIR as CATALOG_DIR
from bot.config import DEFAULT_QUIZ
from bot.logs import setup_logging
from bot.quiz import load_quiz
from bot.sandbox.telegram import TelegramSandbox
from tests.conftest import make_settings

COMPANY = yaml.safe_load((CATALOG_DIR / "company.yaml").read_text(encoding="utf-8"))
TIERS = [{"id": "small", "name": "до 50 тыс", "max": 50000},
         {"id": "big", "name": "от 50 тыс", "min": 50000, "discount": 10}]


def catalogue_data(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "currency": "KZT",
        "categories": [{"id": "tea", "name": "Чай"}, {"id": "green", "name": "Зелёный чай", "parent": "tea"}],
        "tiers": TIERS,
        "products": [{"sku": "T-1", "name": "Чай зелёный", "category": "green", "unit": "kg", "price": 1999.9},
                     {"sku": "T-2", "name": "Чай чёрный", "category": "tea", "prices": {"small": 900, "big": 850}}],
    }
    return {**data, **overrides}


def test_a_single_price_gets_each_tier_discount_and_the_currency_sign(tmp_path: Path) -> None:
    catalogue = build(catalogue_data(), COMPANY, {"category": {"teas": "tea"}, "volume": {"a": "small", "b": "big"}}, tmp_path)
    green, black = catalogue.products
    assert green.prices == {"small": Decimal("1999.9"), "big": Decimal("1799.91")}
    assert black.prices == {"small": 900, "big": 850}
    assert catalogue.money(green.prices["big"], "ru") == "1\u00a0799,91\u00a0₸"
    assert catalogue.money(Decimal(12000), "en") == "12,000\u00a0₸"
    assert catalogue.unit_label("kg", "ru", per=True) == "за кг"
    # a parent category brings its children; the volume answer picks the tier
    assert catalogue.buyer_categories({"category": ["teas"]}) == ("tea", "green")
    assert catalogue.buyer_tier({"volume": "b"}) == "big" and catalogue.buyer_tier({}) is None
    assert len(catalogue.version) == 32
    changed = build(catalogue_data(currency="BYN"), COMPANY, {}, tmp_path)
    assert changed.version != catalogue.version and changed.money(5, "ru") == "5\u00a0Br"


@pytest.mark.parametrize(("change", "expected"), [
    ({"currency": "XYZ"}, "unknown currency 'XYZ'"),
    ({"products": [{"sku": "T-1", "name": "Чай", "category": "coffee", "price": 5}]}, "product 'T-1': category: unknown category 'coffee'"),
    ({"products": [{"sku": "T-1", "name": "Чай", "category": "tea", "prices": {"small": 5}}]}, "no price for tiers ['big']"),
    ({"products": [{"sku": "T-1", "name": "Чай", "category": "tea", "unit": "barrels", "price": 5}]}, "unknown unit 'barrels'"),
    ({"products": [{"sku": "T-1", "name": "Чай", "category": "tea", "price": 5},
                   {"sku": "T-9", "name": "Чай", "category": "tea", "price": -5}]}, "product #2 (T-9): price: Input should be greater than 0"),
    ({"products": [{"sku": "T-1", "name": "Чай", "category": "tea", "price": 5, "pictures": ["../../etc/passwd"]}]}, "relative path inside"),
    ({"products": [{"sku": "T-1", "name": "Чай", "category": "tea", "price": 5}] * 2}, "duplicate SKU 'T-1'"),
])
def test_invalid_data_is_refused_naming_the_item_and_the_field(tmp_path: Path, change: dict[str, object], expected: str) -> None:
    with pytest.raises(CatalogError) as error:
        build(catalogue_data(**change), COMPANY, {}, tmp_path)
    assert expected in str(error.value) and str(tmp_path / "catalog.yaml") in str(error.value)


def test_mapping_to_an_unknown_category_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="category option 'teas' → unknown category 'coffee'"):
        build(catalogue_data(), COMPANY, {"category": {"teas": ["tea", "coffee"]}}, tmp_path)


@pytest.fixture
def unmapped(tmp_path: Path) -> Path:
    """The sample catalogue whose mapping forgets the quiz's «Обувь» option (and so the shoes category)."""
    folder = Path(shutil.copytree(CATALOG_DIR, tmp_path / "catalog"))
    mapping = folder / "mapping.yaml"
    mapping.write_text(mapping.read_text(encoding="utf-8").replace("  shoes: shoes\n", ""), encoding="utf-8")
    return folder


def test_mapping_problems_name_the_option_and_the_category(unmapped: Path) -> None:
    assert mapping_problems(load_catalogue(CATALOG_DIR), load_quiz(DEFAULT_QUIZ)) == []
    assert mapping_problems(load_catalogue(unmapped), load_quiz(DEFAULT_QUIZ)) == [
        "quiz category option 'shoes' maps to nothing in mapping.yaml", "category 'shoes' (Обувь) is reached by no quiz option"]


async def test_a_quiz_option_with_no_mapping_is_reported_at_start(unmapped: Path, sandbox: TelegramSandbox, sqlite_url: str,
                                                                  tmp_path: Path, renderer: CatalogRenderer,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    setup_logging("INFO")  # the service's log, as `optobot run` sets it up
    settings = make_settings(sandbox, sqlite_url, tmp_path / "data", CATALOG_DIR=unmapped)
    caplog.set_level(logging.WARNING, logger="bot.app")
    app = App(settings, renderer=renderer)
    await app.close()
    reported = [r.getMessage() for r in caplog.records if "catalog.mapping" in r.getMessage()]
    assert len(reported) == 2
    for line, problem in zip(reported, mapping_problems(load_catalogue(unmapped), load_quiz(DEFAULT_QUIZ))):
        assert "level='warning'" in line and problem in line


def test_a_big_category_keeps_hits_news_and_stock_first(tmp_path: Path) -> None:
    products = [{"sku": f"T-{i}", "name": f"Чай {i}", "category": "green", "price": 10, "available": i % 2 == 0,
                 "flags": ["hit"] if i == 9 else ["new"] if i == 7 else []} for i in range(10)]
    catalogue = build(catalogue_data(products=products), COMPANY, {}, tmp_path)
    picked = _sections(CatalogRequest(categories=("green",), per_category=4), catalogue)
    assert [p.sku for p in picked[0]["products"]] == ["T-0", "T-2", "T-7", "T-9"]  # catalogue order; hit, new, in stock kept
    assert [p.sku for p in _sections(CatalogRequest(categories=("green",)), catalogue)[0]["products"]] == [f"T-{i}" for i in range(10)]
