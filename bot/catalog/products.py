"""The supplier's catalogue folder: ``products.yaml`` and ``company.yaml``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

import yaml

#: Product categories, in catalogue order; the quiz's ``category`` option keys.
CATEGORIES = ("women", "men", "kids", "shoes", "accessories")
#: Wholesale price tiers, smallest volume first; the quiz's ``volume`` option keys.
TIERS = ("upto100k", "100to300k", "300kto1m", "over1m")
#: Units a minimum order can be counted in.
UNITS = ("pcs", "pairs", "sets")


class CatalogError(ValueError):
    """The catalogue folder holds invalid data."""


@dataclass(frozen=True)
class Product:
    """One catalogue item; ``prices`` maps every tier of :data:`TIERS` to RUB per unit."""

    sku: str
    name: str
    name_en: str
    category: str
    sizes: tuple[str, ...]
    min_quantity: int
    unit: str
    prices: Mapping[str, int]
    image: str
    bestseller: bool = False

    def title(self, language: str) -> str:
        """The product name in ``language`` (Russian when no translation exists)."""
        return self.name_en if language == "en" and self.name_en else self.name


def _product(item: Mapping[str, Any]) -> Product:
    sku = str(item.get("sku", ""))
    try:
        prices = {tier: int(item["prices"][tier]) for tier in TIERS}
        product = Product(
            sku=sku,
            name=str(item["name"]),
            name_en=str(item.get("name_en") or ""),
            category=str(item["category"]),
            sizes=tuple(str(size) for size in item.get("sizes") or ()),
            min_quantity=int(item["min_order"]["quantity"]),
            unit=str(item["min_order"]["unit"]),
            prices=prices,
            image=str(item["image"]),
            bestseller=bool(item.get("bestseller", False)),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise CatalogError(f"product {sku or item!r}: {error!r}") from error
    image = PurePosixPath(product.image)
    problems = [
        f"unknown category {product.category!r}" if product.category not in CATEGORIES else "",
        f"unknown unit {product.unit!r}" if product.unit not in UNITS else "",
        "min_order must be positive" if product.min_quantity < 1 else "",
        "prices must fall with the tier"
        if any(prices[a] <= prices[b] for a, b in zip(TIERS, TIERS[1:])) else "",
        "image must be a relative path inside the catalogue"
        if image.is_absolute() or ".." in image.parts else "",
    ]
    if not sku or any(problems):
        raise CatalogError(f"product {sku!r}: " + "; ".join(p for p in problems if p))
    return product


def load_products(path: Path) -> tuple[Product, ...]:
    """Parse and validate ``products.yaml``; SKUs must be unique."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    products = tuple(_product(item) for item in data.get("products") or ())
    skus = [product.sku for product in products]
    if len(set(skus)) != len(skus):
        raise CatalogError("duplicate SKUs in products.yaml")
    return products


def load_company(path: Path) -> dict[str, Any]:
    """Parse ``company.yaml`` (supplier, logo, manager contacts, test-batch terms)."""
    company = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    missing = {"name", "tagline", "warehouse", "logo", "manager", "test_batch"} - set(company)
    if missing:
        raise CatalogError(f"company.yaml lacks {sorted(missing)}")
    return company
