"""Draw the food sample's product pictures (``pictures/<sku>.jpg``) and its logo (``logo.png``) with Pillow.

Each product of ``catalog.yaml`` gets the shape of its kind (:data:`KINDS`: a sack, a box, a bottle…) in its own
colour on a light tint of it, labelled with its SKU. Nothing is copied from elsewhere. Run from anywhere:

    python samples/food/generate_pictures.py
"""
from __future__ import annotations

from pathlib import Path

import yaml
from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
SIZE = 480
PALETTE = ["#bc6c25", "#606c38", "#c1121f", "#3a86ff", "#8338ec", "#e09f3e", "#2a9d8f", "#9c6644", "#d62828", "#457b9d"]
#: The shape of each product.
KINDS = {
    "F-101": "sack", "F-102": "sack", "F-103": "sack", "F-104": "box", "F-105": "box",
    "F-201": "bottle", "F-202": "bottle", "F-203": "bottle", "F-204": "jar", "F-301": "can",
    "F-302": "can", "F-303": "can", "F-304": "can", "F-401": "cup", "F-402": "cup",
    "F-403": "cup", "F-404": "jar", "F-501": "cookie", "F-502": "candy", "F-503": "cookie",
    "F-504": "candy",
}


def tint(colour: str, share: float) -> tuple[int, int, int]:
    """``colour`` mixed with white (``share`` of the colour kept)."""
    rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
    return tuple(round(255 - (255 - c) * share) for c in rgb)  # type: ignore[return-value]


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.truetype("DejaVuSans-Bold.ttf", size)
    except OSError:
        return ImageFont.load_default(size)


def shape(draw: ImageDraw.ImageDraw, kind: str, colour: str, dark: tuple[int, int, int]) -> None:
    """The silhouette of ``kind`` in a 480 × 480 picture."""
    if kind == "sack":
        draw.polygon([(150, 140), (330, 140), (370, 420), (110, 420)], fill=colour)
        draw.rectangle((165, 110, 315, 145), fill=dark)
    elif kind == "box":
        draw.rectangle((130, 130, 350, 420), fill=colour)
        draw.rectangle((130, 200, 350, 260), fill=dark)
    elif kind == "bottle":
        draw.rectangle((210, 90, 270, 160), fill=dark)
        draw.rounded_rectangle((170, 150, 310, 420), radius=40, fill=colour)
        draw.rectangle((170, 250, 310, 320), fill=dark)
    elif kind == "jar":
        draw.rectangle((160, 130, 320, 170), fill=dark)
        draw.rounded_rectangle((150, 165, 330, 410), radius=30, fill=colour)
    elif kind == "can":
        draw.ellipse((140, 130, 340, 190), fill=dark)
        draw.rectangle((140, 160, 340, 380), fill=colour)
        draw.ellipse((140, 350, 340, 410), fill=colour)
        draw.rectangle((140, 230, 340, 290), fill=dark)
    elif kind == "cup":
        draw.rounded_rectangle((130, 200, 310, 400), radius=30, fill=colour)
        draw.ellipse((280, 240, 370, 340), outline=colour, width=22)
        for x in (170, 220, 270):
            draw.arc((x - 20, 110, x + 20, 190), 90, 270, fill=dark, width=8)
    elif kind == "cookie":
        draw.ellipse((120, 140, 360, 380), fill=colour)
        for x, y in ((180, 200), (280, 220), (220, 300), (300, 310), (170, 290)):
            draw.ellipse((x - 14, y - 14, x + 14, y + 14), fill=dark)
    else:  # candy
        draw.ellipse((170, 190, 310, 330), fill=colour)
        draw.polygon([(175, 260), (100, 200), (100, 320)], fill=dark)
        draw.polygon([(305, 260), (380, 200), (380, 320)], fill=dark)


def picture(sku: str, kind: str, colour: str) -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE), tint(colour, 0.15))
    draw = ImageDraw.Draw(image)
    dark = tint(colour, 1.0)
    dark = tuple(round(c * 0.6) for c in dark)  # type: ignore[assignment]
    shape(draw, kind, colour, dark)
    draw.text((24, 20), sku, font=font(34), fill=dark)
    return image


def logo() -> Image.Image:
    image = Image.new("RGB", (240, 240), "#606c38")
    draw = ImageDraw.Draw(image)
    draw.ellipse((40, 40, 200, 200), fill="#fefae0")
    draw.text((120, 120), "ПС", font=font(72), fill="#606c38", anchor="mm")
    return image


def main() -> None:
    """Regenerate every picture named in ``catalog.yaml``, and the logo."""
    products = yaml.safe_load((HERE / "catalog.yaml").read_text(encoding="utf-8"))["products"]
    for index, product in enumerate(products):
        target = HERE / product["pictures"][0]
        target.parent.mkdir(parents=True, exist_ok=True)
        picture(product["sku"], KINDS[product["sku"]], PALETTE[index * 3 % len(PALETTE)]).save(target, "JPEG", quality=85)
    logo().save(HERE / "logo.png")


if __name__ == "__main__":
    main()
