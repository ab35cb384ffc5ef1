"""Reading what suppliers have: a YML feed (Yandex Market Language), an XLSX or CSV price list.

Each reader turns the file into catalogue data (categories and product dicts, not yet validated) plus the problems it
met, each naming the row or offer and the field. The import mapping (``import.yaml`` in the catalogue folder, or
``--mapping FILE``) says which column or ``<param>`` holds what::

    columns:            # price lists: field → column header (case and spaces don't matter)
      sku: Артикул
      name: Наименование
      category: Категория
      price: Цена                         # one price (each tier's discount applies) …
      prices: {small: "до 100 тыс", big: "от 100 тыс"}   # … or a column per tier
      unit: Ед.
      min_order: Мин. заказ
      pack: В упаковке
      stock: Остаток
      variants: Размеры                   # "42, 44, 46"
      pictures: Фото                      # URLs or paths, separated by spaces, commas or semicolons
      flags: Метки                        # хит, новинка, распродажа
      description: Описание
      params: [Состав, Страна]            # shown on the card under the column's name
    params:             # YML: fields read from <param name=…> (the rest are shown on the card)
      prices: {big: "Цена опт"}           # tiers not named here: the <price> less the tier's discount
      min_order: Минимальный заказ
      variants: Размер
"""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import iterparse

from bot.quiz import fold

#: Unit words of price lists and feeds → unit ids (the catalogue's own ids are accepted as they are).
UNIT_WORDS = {"шт": "pcs", "штука": "pcs", "штук": "pcs", "pcs": "pcs", "пар": "pairs", "пара": "pairs", "pairs": "pairs",
              "компл": "sets", "комплект": "sets", "sets": "sets", "кг": "kg", "kg": "kg", "упак": "packs",
              "упаковка": "packs", "уп": "packs", "packs": "packs"}
FLAG_WORDS = {"хит": "hit", "hit": "hit", "bestseller": "hit", "новинка": "new", "new": "new", "распродажа": "sale",
              "sale": "sale", "скидка": "sale"}
CURRENCY_IDS = {"RUR": "RUB", "RUB": "RUB", "KZT": "KZT", "BYN": "BYN", "BYR": "BYN", "CNY": "CNY", "USD": "USD", "EUR": "EUR"}
#: How many leading rows may come before a price list's header (titles, a logo row, merged cells).
HEADER_SEARCH = 30


class SourceError(ValueError):
    """The file can't be read at all (not a feed, refused XML, no header row); one line naming the cause."""


@dataclass
class Parsed:
    """What a reader found: categories (``id``, ``name``, ``parent``), product dicts, problems, the feed's currency."""

    categories: list[dict[str, Any]] = field(default_factory=list)
    products: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    currency: str | None = None
    read: int = 0


def split_list(value: Any) -> list[str]:
    """``"42, 44; 46"`` → ``["42", "44", "46"]``."""
    return [part.strip() for part in re.split(r"[,;\n]+", str(value or "")) if part.strip()]


def number(value: Any) -> Decimal | None:
    """A price or quantity as written in Russian price lists (``1 450,50 ₽``); ``None`` when empty; ``ValueError`` when not a
    number."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return Decimal(str(value))
    text = re.sub(r"[\s\u00a0₽$¥₸]|руб\.?|р\.", "", str(value), flags=re.I).replace(",", ".")
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not a number: {str(value)[:40]!r}") from None


def unit_id(word: Any) -> str:
    text = fold(str(word or "")).rstrip(" .")
    return UNIT_WORDS.get(text, text) or "pcs"


def flags_of(value: Any) -> list[str]:
    return list(dict.fromkeys(FLAG_WORDS[w] for w in (fold(p) for p in split_list(value)) if w in FLAG_WORDS))


# ------------------------------------------------------------------ YML
def read_yml(source: IO[bytes], mapping: dict[str, Any]) -> Parsed:
    """Stream a YML feed (``<yml_catalog><shop><categories>…<offers><offer>…``); entities and external references are refused."""
    params = mapping.get("params") or {}
    price_params = {fold(name): tier for tier, name in (params.get("prices") or {}).items()}
    field_params = {fold(str(name)): key for key, name in params.items() if key != "prices" and isinstance(name, str)}
    parsed = Parsed()
    try:
        for _, element in iterparse(source, events=("end",), forbid_dtd=False, forbid_entities=True, forbid_external=True):
            if element.tag == "category":
                parsed.categories.append({"id": (element.get("id") or "").strip(), "name": (element.text or "").strip(),
                                          "parent": (element.get("parentId") or "").strip() or None})
            elif element.tag == "currency" and element.get("rate", "1") in ("1", "1.0") and parsed.currency is None:
                parsed.currency = CURRENCY_IDS.get((element.get("id") or "").upper())
            elif element.tag == "offer":
                parsed.read += 1
                product = _offer(element, price_params, field_params, parsed)
                if product is not None:
                    parsed.products.append(product)
                element.clear()
    except DefusedXmlException as error:
        raise SourceError(f"refused: the feed declares entities or external references ({type(error).__name__})") from None
    except SyntaxError as error:  # xml.etree's ParseError
        raise SourceError(f"not well-formed XML: {error}") from None
    if not parsed.read and not parsed.categories:
        raise SourceError("no <categories> and no <offer> found: is this a YML feed?")
    return parsed


def _offer(element: Any, price_params: dict[str, str], field_params: dict[str, str], parsed: Parsed) -> dict[str, Any] | None:
    offer_id = (element.get("id") or "").strip()
    where = f"offer {offer_id or '#' + str(parsed.read)}"

    def text(tag: str) -> str:
        found = element.find(tag)
        return (found.text or "").strip() if found is not None and found.text else ""

    name = text("name") or " ".join(p for p in (text("typePrefix"), text("vendor"), text("model")) if p)
    product: dict[str, Any] = {
        "sku": text("vendorCode") or offer_id, "name": name, "description": text("description"),
        "category": text("categoryId"), "available": element.get("available", "true").lower() != "false",
        "pictures": [p.text.strip() for p in element.findall("picture") if p.text and p.text.strip()],
        "prices": {}, "params": [], "flags": [], "where": where,
    }
    key = "price"
    try:
        price, oldprice = number(text("price")), number(text("oldprice"))
        if price is None:
            raise ValueError("missing")
        product["price"] = price
        if oldprice and oldprice > price:
            product["flags"].append("sale")
        variants = []
        for param in element.findall("param"):
            name_, value = (param.get("name") or "").strip(), (param.text or "").strip()
            folded, key = fold(name_), f"param {name_!r}"
            if not value:
                continue
            if folded in price_params:
                product["prices"][price_params[folded]] = number(value)
            elif field_params.get(folded) == "variants":
                variants += split_list(value)
            elif folded in field_params:
                product[field_params[folded]] = _field(field_params[folded], value)
            else:
                product["params"].append({"name": name_, "value": value, "unit": (param.get("unit") or "").strip()})
        product["variants"] = variants
    except ValueError as error:
        parsed.problems.append(f"{where}: {key}: {error}")
        return None
    if not product["prices"]:
        del product["prices"]
    return product


def _field(key: str, value: Any) -> Any:
    """A cell or param value as the product field ``key`` wants it."""
    if key in ("min_order", "pack", "stock"):
        amount = number(value)
        return None if amount is None else int(amount)
    if key == "unit":
        return unit_id(value)
    if key == "flags":
        return flags_of(value)
    if key == "variants":
        return split_list(value)
    if key == "pictures":
        return [p for p in re.split(r"[\s,;]+", str(value or "")) if p]
    if key == "available":
        return fold(str(value)) not in ("0", "нет", "no", "false", "под заказ")
    return str(value).strip() if value is not None else ""


# ------------------------------------------------------------ price lists
def read_table(rows: Iterable[list[Any]], mapping: dict[str, Any]) -> Parsed:
    """Rows of an XLSX sheet or a CSV file: find the header row, then one product per row (empty rows skipped)."""
    columns = mapping.get("columns") or {}
    if not columns.get("sku") or not columns.get("name"):
        raise SourceError("the import mapping has no columns: with at least sku and name (see README «Your own catalogue»)")
    wanted = _wanted(columns)
    iterator = iter(rows)
    header: dict[str, int] | None = None
    number_ = 0
    for number_, row in enumerate(iterator, 1):
        cells = {fold(str(c)): i for i, c in enumerate(row) if c is not None and str(c).strip()}
        if sum(name in cells for name in wanted) >= max(2, len(wanted) // 2):
            header = cells
            break
        if number_ >= HEADER_SEARCH:
            break
    if header is None:
        raise SourceError(f"no header row with the mapped columns {sorted(wanted)[:6]} in the first {HEADER_SEARCH} rows")
    missing = sorted(name for name in wanted if name not in header)
    parsed = Parsed(problems=[f"column {name!r} of the mapping is not in the header (row {number_})" for name in missing])
    categories: dict[str, None] = {}
    for number_, row in enumerate(iterator, number_ + 1):
        if not any(c is not None and str(c).strip() for c in row):
            continue
        parsed.read += 1
        product = _row(row, header, columns, number_, parsed)
        if product is not None:
            categories.setdefault(product["category"], None)
            parsed.products.append(product)
    parsed.categories = [{"id": name, "name": name} for name in categories]
    return parsed


def _wanted(columns: dict[str, Any]) -> set[str]:
    names: list[Any] = []
    for key, value in columns.items():
        names += list(value.values()) if key == "prices" else list(value) if key == "params" else [value]
    return {fold(str(n)) for n in names if n}


def _row(row: list[Any], header: dict[str, int], columns: dict[str, Any], number_: int, parsed: Parsed) -> dict[str, Any] | None:
    def cell(name: Any) -> Any:
        index = header.get(fold(str(name)))
        return row[index] if index is not None and index < len(row) else None

    sku = str(cell(columns["sku"]) or "").strip().removesuffix(".0")
    where = f"row {number_}" + (f" ({sku})" if sku else "")
    product: dict[str, Any] = {"params": [], "where": where}
    key = "sku"
    try:
        for key, name in columns.items():
            if key == "prices":
                product["prices"] = {tier: number(cell(col)) for tier, col in name.items() if number(cell(col)) is not None}
            elif key == "params":
                product["params"] = [{"name": str(col), "value": str(cell(col)).strip()} for col in name
                                     if cell(col) is not None and str(cell(col)).strip()]
            elif key == "price":
                product["price"] = number(cell(name))
            elif (value := cell(name)) is not None and str(value).strip():
                product[key] = _field(key, value)
    except ValueError as error:
        parsed.problems.append(f"{where}: {key}: {error}")
        return None
    product["sku"] = sku
    if not product.get("category"):
        parsed.problems.append(f"{where}: category: empty")
        return None
    return product


def read_xlsx(data: bytes, mapping: dict[str, Any]) -> Parsed:
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (InvalidFileException, KeyError, OSError, ValueError) as error:
        raise SourceError(f"not an XLSX workbook ({type(error).__name__})") from None
    try:
        return read_table((list(row) for row in workbook.active.iter_rows(values_only=True)), mapping)
    finally:
        workbook.close()


def decode(data: bytes) -> str:
    """UTF-8 (with or without a BOM), else Windows-1251 — what Excel and 1C save CSV in."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1251")


def read_csv(data: bytes, mapping: dict[str, Any]) -> Parsed:
    text = decode(data)
    sample = "\n".join(text.splitlines()[:HEADER_SEARCH])
    delimiter = ";" if sample.count(";") >= sample.count(",") else ","
    return read_table(csv.reader(io.StringIO(text), delimiter=delimiter), mapping)


def kind_of(name: str, head: bytes) -> str:
    """``yml``, ``xlsx`` or ``csv`` from the file name, else from its first bytes."""
    suffix = Path(name.split("?")[0]).suffix.lower()
    if suffix in (".xml", ".yml"):
        return "yml"
    if suffix in (".xlsx", ".csv"):
        return suffix[1:]
    if head.startswith(b"PK"):
        return "xlsx"
    return "yml" if head.lstrip().startswith(b"<") else "csv"


def read(name: str, data: bytes, mapping: dict[str, Any]) -> Parsed:
    """Read a feed or price list by its kind (:func:`kind_of`)."""
    kind = kind_of(name, data[:64])
    if kind == "yml":
        return read_yml(io.BytesIO(data), mapping)
    return read_xlsx(data, mapping) if kind == "xlsx" else read_csv(data, mapping)

