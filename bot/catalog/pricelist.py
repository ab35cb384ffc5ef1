"""The buyer's XLSX price list: the whole assortment at their tier (wholesale buyers build orders in Excel).

One sheet: SKU, name, category, variants, unit, minimum order, pack, the buyer's price, availability; a frozen bold
header, an autofilter, widths that fit. Prices are numbers in the catalogue's currency format, so Excel can sum them.
"""
from __future__ import annotations

import io

from bot.catalog.model import Catalogue
from bot.texts import raw

COLUMNS = ("sku", "name", "category", "variants", "unit", "min_order", "pack", "price", "availability")
WIDTHS = {"sku": 14, "name": 48, "category": 24, "variants": 24, "unit": 9, "min_order": 11, "pack": 10, "price": 14,
          "availability": 16}
CURRENCY_FORMATS = {"RUB": '#,##0.00 "₽"', "KZT": '#,##0.00 "₸"', "BYN": '#,##0.00 "Br"', "CNY": '#,##0.00 "¥"',
                    "USD": '#,##0.00 "$"', "EUR": '#,##0.00 "€"'}


def price_list(catalogue: Catalogue, tier_id: str, lang: str) -> bytes:
    """The XLSX bytes of ``catalogue`` at ``tier_id``, headers and words in ``lang``."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font, PatternFill
    from openpyxl.utils import get_column_letter

    def tx(key: str) -> str:
        return str(raw(lang, f"catalog.price_list.{key}"))

    tier = catalogue.tier(tier_id)
    book = Workbook(write_only=True)  # streamed: 5,000 rows in a fraction of a second
    sheet = book.create_sheet(tx("sheet")[:31])
    for index, column in enumerate(COLUMNS, 1):
        sheet.column_dimensions[get_column_letter(index)].width = WIDTHS[column]
    sheet.freeze_panes = "A2"
    sheet.auto_filter.ref = f"A1:{get_column_letter(len(COLUMNS))}{len(catalogue.products) + 1}"
    header_font, header_fill = Font(bold=True, color="FFFFFF"), PatternFill("solid", fgColor="1D3557")

    def header(text: str) -> WriteOnlyCell:
        cell = WriteOnlyCell(sheet, value=text)
        cell.font, cell.fill = header_font, header_fill
        return cell

    sheet.append([header(tx(column) if column != "price" else f"{tx(column)} ({tier.label(lang)})") for column in COLUMNS])
    names = {c.id: c.label(lang) for c in catalogue.categories}
    for product in catalogue.products:
        stock = tx("out_of_stock") if not product.in_stock else str(product.stock) if product.stock is not None else tx("in_stock")
        price = WriteOnlyCell(sheet, value=float(product.prices[tier_id]))
        price.number_format = CURRENCY_FORMATS[catalogue.currency]
        sheet.append([product.sku, product.title(lang), names[product.category], ", ".join(product.variants),
                      catalogue.unit_label(product.unit, lang), product.min_order, product.pack, price, stock])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
