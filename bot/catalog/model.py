"""The supplier's catalogue as data (``CATALOG_DIR``): categories, price tiers, currency, units, products,
the company file and the quiz → catalogue mapping. Nothing in code knows a category or a tier.

The folder holds ``catalog.yaml`` (the hand-edited format; an import writes the same data as a new version),
``company.yaml`` and ``mapping.yaml``. :attr:`Catalogue.version` is a digest of all of it (and the pictures'
sizes and times): renders are cached per version.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import yaml
from babel.numbers import format_decimal
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bot import texts
from bot.quiz import Quiz, fold

#: Currency code → the sign shown right of the amount.
CURRENCIES = {"RUB": "₽", "KZT": "₸", "BYN": "Br", "CNY": "¥", "USD": "$", "EUR": "€"}
#: Product flags, in the order badges are shown.
FLAGS = ("hit", "new", "sale")
CATALOG_FILE, COMPANY_FILE, MAPPING_FILE = "catalog.yaml", "company.yaml", "mapping.yaml"
CENT = Decimal("0.01")


class CatalogError(ValueError):
    """The catalogue holds invalid data; the message names the file, the item and the field."""


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Named(_Data):
    id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1)
    name_en: str = ""

    def label(self, lang: str) -> str:
        """The name in ``lang`` (Russian when there is no translation)."""
        return self.name_en if lang == "en" and self.name_en else self.name


class Category(_Named):
    """A product category; ``parent`` makes a tree (a buyer mapped to a parent gets its children too)."""

    parent: str | None = None


class Tier(_Named):
    """A wholesale price tier by purchase volume (``min``/``max`` in the catalogue's currency); ``discount`` (percent off
    a product's single ``price``) computes the tier's price for products that give one price only."""

    min: Decimal | None = Field(default=None, ge=0)
    max: Decimal | None = Field(default=None, gt=0)
    discount: Decimal = Field(default=Decimal(0), ge=0, lt=100)


class Unit(_Data):
    """A unit a product is sold in: ``short`` after a number (шт., кг), ``per`` after a price (за шт., за кг)."""

    id: str = Field(min_length=1, max_length=32)
    short: str
    short_en: str = ""
    per: str
    per_en: str = ""


class Param(_Data):
    """A free parameter shown on the product card (material, country, shelf life…)."""

    name: str = Field(min_length=1)
    value: str = Field(min_length=1)
    unit: str = ""

    def text(self, words: Mapping[str, str] | None = None) -> str:
        """``value unit``, each as ``words`` has it (as written where it has none)."""
        words = words or {}
        return f"{words.get(self.value, self.value)} {words.get(self.unit, self.unit)}".strip()


class Product(_Data):
    """One item of the assortment. ``prices`` holds a price per tier id; or ``price`` alone, with each tier's discount."""

    sku: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1)
    name_en: str = ""
    description: str = ""
    category: str
    variants: tuple[str, ...] = ()
    unit: str = "pcs"
    min_order: int = Field(default=1, ge=1)
    pack: int | None = Field(default=None, ge=1)
    price: Decimal | None = Field(default=None, gt=0)
    prices: dict[str, Decimal] = Field(default_factory=dict)
    available: bool = True
    stock: int | None = Field(default=None, ge=0)
    pictures: tuple[str, ...] = ()
    flags: tuple[Literal["hit", "new", "sale"], ...] = ()
    params: tuple[Param, ...] = ()

    @field_validator("sku", "name", "category", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return str(value).strip() if isinstance(value, (str, int)) else value

    @field_validator("variants", mode="before")
    @classmethod
    def _variants(cls, value: Any) -> Any:
        return tuple(str(v) for v in value) if isinstance(value, (list, tuple)) else value

    @field_validator("prices")
    @classmethod
    def _positive(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        if any(price <= 0 for price in value.values()):
            raise ValueError("prices must be positive")
        return value

    @field_validator("pictures")
    @classmethod
    def _inside(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for picture in value:
            path = PurePosixPath(picture)
            if path.is_absolute() or ".." in path.parts or "://" in picture:
                raise ValueError(f"picture {picture!r} must be a relative path inside the catalogue")
        return value

    def title(self, lang: str) -> str:
        """The product name in ``lang`` (Russian when there is no translation)."""
        return self.name_en if lang == "en" and self.name_en else self.name

    def flagged(self, flag: str) -> bool:
        return flag in self.flags

    @property
    def in_stock(self) -> bool:
        return self.available and self.stock != 0


class QuizMapping(_Data):
    """``mapping.yaml``: each option of the quiz's ``category`` question → catalogue categories, each ``volume`` option →
    a tier."""

    category: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    volume: dict[str, str] = Field(default_factory=dict)

    @field_validator("category", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): (v,) if isinstance(v, str) else v for k, v in value.items()}
        return value


class Catalogue(_Data):
    """The whole assortment of one supplier; :func:`load_catalogue` fills ``company``, ``mapping``, ``root``, ``version``."""

    currency: str = "RUB"
    variants_label: str = ""
    variants_label_en: str = ""
    params_en: dict[str, str] = Field(default_factory=dict)  # the free params' words (name, value, unit) in English
    units: tuple[Unit, ...] = ()
    categories: tuple[Category, ...] = Field(min_length=1)
    tiers: tuple[Tier, ...] = Field(min_length=1)
    products: tuple[Product, ...] = ()
    company: dict[str, Any] = Field(default_factory=dict)
    mapping: QuizMapping = Field(default_factory=QuizMapping)
    root: Path = Path(".")
    version: str = ""

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if value.upper() not in CURRENCIES:
            raise ValueError(f"unknown currency {value!r}; expected one of {', '.join(CURRENCIES)}")
        return value.upper()

    @model_validator(mode="after")
    def _consistent(self) -> Catalogue:
        by_name = {fold(c.name): c.id for c in self.categories}
        ids = {c.id for c in self.categories}
        named = {option: tuple(t if t in ids else by_name.get(fold(t), t) for t in targets)  # a category by its id or its name
                 for option, targets in self.mapping.category.items()}
        object.__setattr__(self, "mapping", self.mapping.model_copy(update={"category": named}))
        problems = _duplicates("category", (c.id for c in self.categories))
        problems += _duplicates("tier", (t.id for t in self.tiers))
        problems += _duplicates("unit", (u.id for u in self.units))
        problems += _duplicates("SKU", (p.sku for p in self.products))
        ids = {c.id for c in self.categories}
        problems += [f"category {c.id!r}: unknown parent {c.parent!r}" for c in self.categories if c.parent and c.parent not in ids]
        problems += [f"product {p.sku!r}: {problem}" for p in self.products for problem in self.product_problems(p)]
        tiers = {t.id for t in self.tiers}
        for option, targets in self.mapping.category.items():
            problems += [f"mapping: category option {option!r} → unknown category {c!r}" for c in targets if c not in ids]
        problems += [f"mapping: volume option {option!r} → unknown tier {tier!r}"
                     for option, tier in self.mapping.volume.items() if tier not in tiers]
        if problems:
            raise ValueError("; ".join(problems[:10]) + (f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""))
        priced = tuple(self._priced(p) for p in self.products)
        object.__setattr__(self, "products", priced)
        return self

    def product_problems(self, product: Product) -> list[str]:
        """What makes ``product`` unusable in this catalogue (unknown category, unit or tier, no price for a tier)."""
        problems = []
        if product.category not in {c.id for c in self.categories}:
            problems.append(f"category: unknown category {product.category!r}")
        if not self._unit(product.unit):
            problems.append(f"unit: unknown unit {product.unit!r} (add it under units:)")
        tiers = [t.id for t in self.tiers]
        if unknown := set(product.prices) - set(tiers):
            problems.append(f"prices: unknown tiers {sorted(unknown)}")
        if product.price is None and (missing := [t for t in tiers if t not in product.prices]):
            problems.append(f"prices: no price for tiers {missing} (or give one price: with the tiers' discounts)")
        return problems

    def _priced(self, product: Product) -> Product:
        """``product`` with a price for every tier (its own, else its ``price`` less the tier's discount)."""
        if product.price is None or all(t.id in product.prices for t in self.tiers):
            return product
        prices = {t.id: product.prices.get(t.id) or (product.price * (100 - t.discount) / 100).quantize(CENT, ROUND_HALF_UP)
                  for t in self.tiers}
        return product.model_copy(update={"prices": prices})

    # ------------------------------------------------------------ look-ups
    def category(self, category_id: str) -> Category:
        return next(c for c in self.categories if c.id == category_id)

    def tier(self, tier_id: str) -> Tier:
        return next(t for t in self.tiers if t.id == tier_id)

    def next_tier(self, tier_id: str) -> Tier | None:
        """The tier after ``tier_id`` (a bigger volume, a lower price), if any."""
        ids = [t.id for t in self.tiers]
        index = ids.index(tier_id)
        return self.tiers[index + 1] if index + 1 < len(ids) else None

    def descendants(self, category_id: str) -> list[str]:
        """``category_id`` and every category under it, in catalogue order."""
        found = {category_id}
        for _ in self.categories:  # a tree is at most this deep
            found |= {c.id for c in self.categories if c.parent in found}
        return [c.id for c in self.categories if c.id in found]

    def picture_uri(self, picture: str) -> str:
        """A product picture as a ``file:`` URI (pictures live in the catalogue folder or the import store)."""
        return (self.root / picture).as_uri()

    def in_category(self, category_id: str) -> list[Product]:
        return [p for p in self.products if p.category == category_id]

    def _unit(self, unit_id: str) -> Unit | None:
        own = next((u for u in self.units if u.id == unit_id), None)
        if own is not None:
            return own
        try:
            return Unit(id=unit_id, short=texts.raw("ru", f"catalog.units.{unit_id}"),
                        short_en=texts.raw("en", f"catalog.units.{unit_id}"),
                        per=texts.raw("ru", f"catalog.per_unit.{unit_id}"), per_en=texts.raw("en", f"catalog.per_unit.{unit_id}"))
        except KeyError:
            return None

    def unit_label(self, unit_id: str, lang: str, per: bool = False) -> str:
        """``шт.`` (after a quantity) or, with ``per``, ``за шт.`` (after a price) in ``lang``."""
        unit = self._unit(unit_id)
        if unit is None:
            return unit_id
        if per:
            return unit.per_en if lang == "en" and unit.per_en else unit.per
        return unit.short_en if lang == "en" and unit.short_en else unit.short

    @property
    def currency_sign(self) -> str:
        return CURRENCIES[self.currency]

    def variants_title(self, lang: str) -> str:
        """What the products' variants are called (Размеры, Фасовка…); ``""`` for the generic text."""
        return self.variants_label_en if lang == "en" and self.variants_label_en else self.variants_label

    def param_line(self, param: Param, lang: str) -> str:
        """``Страна: Россия``; in English each word as ``params_en`` has it (as written where it has none)."""
        words = self.params_en if lang == "en" else {}
        return f"{words.get(param.name, param.name)}: {param.text(words)}"

    def money(self, amount: Decimal | int, lang: str) -> str:
        """``1 450 ₽``, ``189,50 ₽``, ``12.50 $``: grouped the language's way, the currency sign on the right."""
        amount = Decimal(amount)
        pattern = "#,##0" if amount == amount.to_integral_value() else "#,##0.00"
        number = format_decimal(amount, format=pattern, locale=lang if lang in texts.LANGUAGES else texts.FALLBACK)
        return f"{number}\u00a0{CURRENCIES[self.currency]}"

    # ------------------------------------------------------------ the quiz
    def buyer_categories(self, interests: Mapping[str, Any]) -> tuple[str, ...]:
        """The catalogue categories the buyer's quiz answers map to (with their children), in catalogue order."""
        chosen = interests.get("category") or ()
        chosen = [chosen] if isinstance(chosen, str) else chosen
        wanted = {d for option in chosen for c in self.mapping.category.get(str(option), ()) for d in self.descendants(c)}
        return tuple(c.id for c in self.categories if c.id in wanted)

    def buyer_tier(self, interests: Mapping[str, Any]) -> str | None:
        """The tier the buyer's volume answer maps to, or ``None``."""
        volume = interests.get("volume")
        return self.mapping.volume.get(str(volume)) if volume else None


def mapping_problems(catalogue: Catalogue, quiz: Quiz) -> list[str]:
    """What is wrong between the quiz and the catalogue: a quiz option that maps to nothing, a mapped option the quiz
    doesn't have, a category with products no option reaches. Each problem is one line."""
    problems = []
    for question, mapped in (("category", catalogue.mapping.category), ("volume", catalogue.mapping.volume)):
        asked = quiz.question(question)
        keys = [option.key for option in asked.options] if asked else []
        problems += [f"quiz {question} option {key!r} maps to nothing in {MAPPING_FILE}" for key in keys if key not in mapped]
        problems += [f"{MAPPING_FILE}: {question} option {key!r} is not in the quiz" for key in mapped if key not in keys]
    reached = {d for targets in catalogue.mapping.category.values() for c in targets for d in catalogue.descendants(c)}
    stocked = {p.category for p in catalogue.products}
    problems += [f"category {c.id!r} ({c.name}) is reached by no quiz option" for c in catalogue.categories
                 if c.id in stocked and c.id not in reached]
    return problems


def _duplicates(what: str, ids: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    twice = sorted({i for i in ids if i in seen or seen.add(i)})  # type: ignore[func-returns-value]
    return [f"duplicate {what} {i!r}" for i in twice]


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise CatalogError(f"{path}: no such file") from None
    except yaml.YAMLError as error:
        raise CatalogError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise CatalogError(f"{path}: expected a mapping at the top")
    return data


def describe(error: ValidationError, data: Mapping[str, Any] | None = None) -> str:
    """A pydantic error as one line naming the item (``products[3] (W-104)``) and the field."""
    lines = []
    for item in error.errors()[:5]:
        loc = list(item["loc"])
        where = ".".join(str(part) for part in loc)
        if data is not None and len(loc) >= 2 and loc[0] == "products" and isinstance(loc[1], int):
            products = data.get("products") or []
            sku = products[loc[1]].get("sku") if loc[1] < len(products) and isinstance(products[loc[1]], dict) else None
            where = f"product #{loc[1] + 1}" + (f" ({sku})" if sku else "") + (f": {'.'.join(map(str, loc[2:]))}" if loc[2:] else "")
        lines.append(f"{where}: {item['msg']}" if where else item["msg"])
    return "; ".join(lines)


def company_problems(company: Mapping[str, Any]) -> list[str]:
    missing = {"name", "tagline", "warehouse", "logo", "manager", "test_batch"} - set(company)
    return [f"lacks {sorted(missing)}"] if missing else []


def fingerprint(files: Iterable[Path]) -> str:
    """A digest of the sizes and modification times of ``files``."""
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def build(data: Mapping[str, Any], company: Mapping[str, Any], mapping: Mapping[str, Any], root: Path) -> Catalogue:
    """Validate the catalogue data (``catalog.yaml``'s content) with its company and mapping; raises :class:`CatalogError`."""
    if problems := company_problems(company):
        raise CatalogError(f"{root / COMPANY_FILE}: {problems[0]}")
    try:
        catalogue = Catalogue.model_validate({**data, "company": dict(company), "mapping": dict(mapping), "root": root})
    except ValidationError as error:
        raise CatalogError(f"{root / CATALOG_FILE}: {describe(error, data)}") from None
    missing = sorted({p for product in catalogue.products for p in product.pictures if not (root / p).is_file()})
    if missing:
        raise CatalogError(f"{root / CATALOG_FILE}: missing pictures {missing[:5]}")
    content = catalogue.model_dump(mode="json", exclude={"root", "version"})
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode())
    pictures = sorted({root / p for product in catalogue.products for p in product.pictures} | {root / str(company.get("logo"))})
    digest.update(fingerprint(p for p in pictures if p.is_file()).encode())
    return catalogue.model_copy(update={"version": digest.hexdigest()[:32]})


def load_catalogue(catalog_dir: Path) -> Catalogue:
    """Read and validate the catalogue folder (``catalog.yaml``, ``company.yaml``, ``mapping.yaml``)."""
    root = catalog_dir.resolve()
    return build(read_yaml(root / CATALOG_FILE), read_yaml(root / COMPANY_FILE), read_yaml(root / MAPPING_FILE), root)
