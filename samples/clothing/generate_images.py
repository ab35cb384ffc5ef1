"""Draw the sample catalogue's product illustrations: ``images/<sku>.svg``.

Each product of ``catalog.yaml`` gets the silhouette of its kind (:data:`KINDS`) in its own
colour, on a light tint of that colour, labelled with its SKU. Run from anywhere:

    python samples/clothing/generate_images.py
"""
from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent

PALETTE = [
    "#2f6690", "#d1495b", "#3a7d44", "#edae49", "#6a4c93", "#00798c", "#c2683f",
    "#7b9e3b", "#8e3b46", "#5b8e7d", "#b5838d", "#4f5d75", "#e07a5f", "#1d3557",
    "#81b29a", "#9c6644",
]

# Silhouettes in a 100×100 box: a list of (element, is_detail) – details are drawn
# in the darker shade, the rest in the product colour.
SHAPES: dict[str, list[tuple[str, bool]]] = {
    "tshirt": [
        ('<path d="M30 12 L42 8 Q50 17 58 8 L70 12 L90 28 L80 40 L72 35 L72 92 L28 92 '
         'L28 35 L20 40 L10 28 Z"/>', False),
    ],
    "polo": [
        ('<path d="M30 12 L43 8 L50 14 L57 8 L70 12 L90 28 L80 40 L72 35 L72 92 L28 92 '
         'L28 35 L20 40 L10 28 Z"/>', False),
        ('<path d="M43 8 L50 22 L57 8 M50 14 L50 34" fill="none"/>', True),
        ('<circle cx="50" cy="26" r="1.6"/><circle cx="50" cy="31" r="1.6"/>', True),
    ],
    "shirt": [
        ('<path d="M32 10 L44 6 L50 14 L56 6 L68 10 L84 22 L92 80 L80 82 L72 40 '
         'L72 94 L28 94 L28 40 L20 82 L8 80 L16 22 Z"/>', False),
        ('<path d="M44 6 L47 18 L50 14 L53 18 L56 6 M50 14 L50 94" fill="none"/>', True),
        ('<circle cx="50" cy="30" r="1.5"/><circle cx="50" cy="46" r="1.5"/>'
         '<circle cx="50" cy="62" r="1.5"/><circle cx="50" cy="78" r="1.5"/>', True),
    ],
    "blouse": [
        ('<path d="M32 12 L42 8 Q50 14 58 8 L68 12 L84 24 L90 78 L80 80 L72 42 '
         'Q76 70 70 92 L30 92 Q24 70 28 42 L20 80 L10 78 L16 24 Z"/>', False),
        ('<path d="M50 16 L40 10 L40 24 Z M50 16 L60 10 L60 24 Z M50 16 L44 34 '
         'M50 16 L56 34"/>', True),
    ],
    "sweater": [
        ('<path d="M34 10 Q50 20 66 10 L84 20 L92 82 L80 84 L72 42 L72 92 L28 92 L28 42 '
         'L20 84 L8 82 L16 20 Z"/>', False),
        ('<path d="M28 86 L72 86 M8 76 L20 78 M80 78 L92 76 M34 10 Q50 24 66 10" '
         'fill="none"/>', True),
    ],
    "hoodie": [
        ('<path d="M36 8 Q50 -2 64 8 L66 18 L34 18 Z"/>', True),
        ('<path d="M34 12 Q50 24 66 12 L84 20 L92 82 L80 84 L72 42 L72 92 L28 92 L28 42 '
         'L20 84 L8 82 L16 20 Z"/>', False),
        ('<path d="M36 62 L64 62 L68 80 L32 80 Z M46 18 L45 34 M54 18 L55 34" '
         'fill="none"/>', True),
    ],
    "coat": [
        ('<path d="M36 6 L64 6 L80 14 L90 90 L78 92 L72 40 L74 98 L26 98 L28 40 L22 92 '
         'L10 90 L20 14 Z"/>', False),
        ('<path d="M36 6 L50 36 L64 6 M50 36 L50 98 M28 50 L72 50" fill="none"/>', True),
        ('<circle cx="44" cy="60" r="1.8"/><circle cx="44" cy="72" r="1.8"/>'
         '<circle cx="56" cy="60" r="1.8"/><circle cx="56" cy="72" r="1.8"/>', True),
    ],
    "jacket": [
        ('<path d="M36 10 L64 10 L82 18 L92 76 L80 80 L72 40 L72 84 L28 84 L28 40 L20 80 '
         'L8 76 L18 18 Z"/>', False),
        ('<path d="M50 10 L50 84 M28 30 L72 30 M28 46 L72 46 M28 62 L72 62 M28 78 L72 78" '
         'fill="none"/>', True),
        ('<rect x="36" y="4" width="28" height="8" rx="3"/>', True),
    ],
    "dress": [
        ('<path d="M40 6 L46 6 Q50 12 54 6 L60 6 L62 22 L58 40 L82 94 L18 94 L42 40 '
         'L38 22 Z"/>', False),
        ('<rect x="41" y="38" width="18" height="5" rx="2"/>', True),
    ],
    "skirt": [
        ('<path d="M32 20 L68 20 L84 88 L16 88 Z"/>', False),
        ('<path d="M32 20 L68 20 L68 27 L32 27 Z"/>', True),
        ('<path d="M42 27 L36 88 M50 27 L50 88 M58 27 L64 88" fill="none"/>', True),
    ],
    "trousers": [
        ('<path d="M30 8 L70 8 L76 94 L56 94 L50 34 L44 94 L24 94 Z"/>', False),
        ('<path d="M30 8 L70 8 L70 15 L30 15 Z"/>', True),
        ('<path d="M50 15 L50 34 M36 15 Q38 24 30 26 M64 15 Q62 24 70 26" fill="none"/>',
         True),
    ],
    "shorts": [
        ('<path d="M26 24 L74 24 L82 70 L56 72 L50 46 L44 72 L18 70 Z"/>', False),
        ('<path d="M26 24 L74 24 L74 31 L26 31 Z"/>', True),
        ('<path d="M50 31 L50 46" fill="none"/>', True),
    ],
    "bodysuit": [
        ('<path d="M32 10 L42 6 Q50 14 58 6 L68 10 L84 24 L76 34 L70 30 L70 70 Q62 90 56 92 '
         'L44 92 Q38 90 30 70 L30 30 L24 34 L16 24 Z"/>', False),
        ('<circle cx="46" cy="88" r="1.5"/><circle cx="54" cy="88" r="1.5"/>', True),
    ],
    "overall": [
        ('<path d="M34 8 L44 6 Q50 12 56 6 L66 8 L82 22 L74 32 L68 28 L70 96 L54 96 L50 62 '
         'L46 96 L30 96 L32 28 L26 32 L18 22 Z"/>', False),
        ('<path d="M50 12 L50 62" fill="none"/>', True),
    ],
    "sneaker": [
        ('<path d="M8 72 Q10 52 24 50 L44 44 Q56 58 72 60 L88 64 Q96 68 94 78 L10 80 Z"/>',
         False),
        ('<path d="M8 78 L95 76 L95 84 Q50 89 8 86 Z"/>', True),
        ('<path d="M40 50 L48 56 M46 48 L54 56 M52 50 L58 58" fill="none"/>', True),
    ],
    "boot": [
        ('<path d="M30 20 L56 20 L58 58 Q72 62 86 66 Q95 70 93 80 L28 82 Z"/>', False),
        ('<path d="M27 80 L94 78 L94 88 L27 88 Z M30 20 L56 20 L56 26 L30 26 Z"/>', True),
    ],
    "tallboot": [
        ('<path d="M34 6 L58 6 L60 62 Q74 66 86 70 Q93 74 91 84 L32 86 Z"/>', False),
        ('<path d="M31 84 L92 82 L92 92 L31 92 Z M34 6 L58 6 L58 14 L34 14 Z"/>', True),
    ],
    "shoe": [
        ('<path d="M8 72 Q12 58 30 58 Q50 64 70 60 Q92 62 93 76 L10 80 Z"/>', False),
        ('<path d="M8 78 L94 75 L94 83 Q50 87 8 85 Z"/>', True),
        ('<path d="M40 60 Q50 54 60 60" fill="none"/>', True),
    ],
    "sandal": [
        ('<path d="M10 78 Q12 70 30 70 L80 68 Q94 70 92 78 L90 84 L10 86 Z"/>', True),
        ('<path d="M30 70 Q40 44 56 68 M60 68 Q70 46 80 68" fill="none" '
         'stroke-width="6"/>', False),
    ],
    "flipflop": [
        ('<ellipse cx="34" cy="52" rx="14" ry="38"/><ellipse cx="68" cy="52" rx="14" '
         'ry="38"/>', False),
        ('<path d="M34 26 L24 52 M34 26 L44 52 M68 26 L58 52 M68 26 L78 52" fill="none" '
         'stroke-width="4"/>', True),
    ],
    "slipper": [
        ('<path d="M10 74 Q12 60 40 56 L60 56 Q88 58 92 74 L10 80 Z"/>', False),
        ('<path d="M9 78 L93 73 L93 81 Q50 86 9 85 Z"/>', True),
        ('<circle cx="52" cy="56" r="8"/>', True),
    ],
    "tote": [
        ('<path d="M36 40 Q36 12 50 12 Q64 12 64 40" fill="none" stroke-width="5"/>', True),
        ('<path d="M22 38 L78 38 L82 94 L18 94 Z"/>', False),
    ],
    "bag": [
        ('<path d="M24 52 L50 8 L76 52" fill="none" stroke-width="3"/>', True),
        ('<rect x="18" y="48" width="64" height="42" rx="8"/>', False),
        ('<path d="M18 60 Q50 76 82 60" fill="none"/><circle cx="50" cy="68" r="3"/>',
         True),
    ],
    "backpack": [
        ('<path d="M40 18 Q50 4 60 18" fill="none" stroke-width="4"/>', True),
        ('<rect x="24" y="16" width="52" height="78" rx="14"/>', False),
        ('<rect x="32" y="58" width="36" height="26" rx="6"/>', True),
    ],
    "belt": [
        ('<rect x="4" y="40" width="92" height="18" rx="4"/>', False),
        ('<rect x="16" y="36" width="20" height="26" rx="3" fill="none" '
         'stroke-width="4"/>', True),
        ('<circle cx="56" cy="49" r="2"/><circle cx="66" cy="49" r="2"/>'
         '<circle cx="76" cy="49" r="2"/>', True),
    ],
    "cap": [
        ('<path d="M18 64 Q18 24 52 24 Q84 24 84 64 Z"/>', False),
        ('<path d="M60 64 L96 64 Q96 74 64 72 Z"/>', True),
        ('<circle cx="51" cy="24" r="3"/><path d="M51 24 L51 64" fill="none"/>', True),
    ],
    "beanie": [
        ('<circle cx="50" cy="16" r="9"/>', True),
        ('<path d="M20 70 Q20 22 50 22 Q80 22 80 70 Z"/>', False),
        ('<rect x="16" y="66" width="68" height="20" rx="4"/>', True),
    ],
    "scarf": [
        ('<path d="M20 20 Q50 34 80 20 L80 34 Q50 48 20 34 Z"/>', False),
        ('<path d="M58 34 L74 34 L70 88 L54 88 Z"/>', False),
        ('<path d="M56 88 L56 96 M60 88 L60 96 M64 88 L64 96 M68 88 L68 96" '
         'fill="none"/>', True),
    ],
    "socks": [
        ('<path d="M30 10 L50 10 L50 56 Q50 70 64 74 Q76 78 72 90 L38 90 Q26 86 30 66 Z"/>',
         False),
        ('<path d="M30 10 L50 10 L50 20 L30 20 Z"/>', True),
        ('<path d="M54 14 L72 14 L72 56 Q72 66 84 70 Q96 74 92 86 L62 86" fill="none" '
         'stroke-width="2"/>', True),
    ],
    "gloves": [
        ('<path d="M28 92 L28 46 Q20 40 18 30 Q22 26 30 34 L30 14 Q34 10 37 14 L38 30 '
         'L40 8 Q44 4 47 8 L47 30 L50 10 Q54 6 57 10 L56 32 L60 16 Q64 12 66 16 L64 50 '
         'L62 92 Z"/>', False),
        ('<rect x="27" y="80" width="36" height="12" rx="2"/>', True),
    ],
    "glasses": [
        ('<rect x="12" y="38" width="34" height="26" rx="10"/><rect x="54" y="38" '
         'width="34" height="26" rx="10"/>', False),
        ('<path d="M46 46 Q50 40 54 46 M12 44 L4 40 M88 44 L96 40" fill="none" '
         'stroke-width="3"/>', True),
    ],
    "wallet": [
        ('<rect x="14" y="30" width="72" height="46" rx="6"/>', False),
        ('<path d="M14 30 L86 30 L86 52 L50 58 L14 52 Z"/>', True),
        ('<circle cx="50" cy="54" r="3"/>', False),
    ],
}


def _mix(colour: str, other: str, share: float) -> str:
    """``colour`` blended with ``other`` (``share`` of ``other``), as ``#rrggbb``."""
    a = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
    b = [int(other[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(x + (y - x) * share):02x}" for x, y in zip(a, b))


def svg(sku: str, kind: str, colour: str) -> str:
    """One product illustration (200×90) as SVG text."""
    dark, tint = _mix(colour, "#000000", 0.35), _mix(colour, "#ffffff", 0.86)
    parts = [
        f'<g fill="{dark if detail else colour}" stroke="{dark}">{element}</g>'
        for element, detail in SHAPES[kind]
    ]
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="200" height="90" '
        'viewBox="0 0 200 90">\n'
        f'<rect width="200" height="90" rx="8" fill="{tint}"/>\n'
        '<g transform="translate(62 7) scale(0.76)" stroke-width="1.5" '
        'stroke-linejoin="round" stroke-linecap="round">\n'
        + "\n".join(parts)
        + "\n</g>\n"
        f'<text x="10" y="17" font-family="DejaVu Sans" font-size="9" '
        f'font-weight="bold" fill="{dark}">{sku}</text>\n'
        "</svg>\n"
    )

#: The silhouette of each product.
KINDS = {
    "W-101": "dress", "W-102": "dress", "W-103": "blouse", "W-104": "shirt", "W-105": "skirt", "W-106": "skirt",
    "W-107": "trousers", "W-108": "trousers", "W-109": "sweater", "W-110": "sweater", "W-111": "hoodie", "W-112": "coat",
    "W-113": "coat", "W-114": "tshirt", "M-201": "tshirt", "M-202": "polo", "M-203": "shirt", "M-204": "shirt",
    "M-205": "trousers", "M-206": "trousers", "M-207": "trousers", "M-208": "sweater", "M-209": "hoodie", "M-210": "sweater",
    "M-211": "jacket", "M-212": "jacket", "M-213": "shorts", "K-301": "bodysuit", "K-302": "overall", "K-303": "tshirt",
    "K-304": "dress", "K-305": "trousers", "K-306": "hoodie", "K-307": "hoodie", "K-308": "shirt", "K-309": "jacket",
    "K-310": "overall", "K-311": "skirt", "K-312": "shorts", "K-313": "sweater", "S-401": "sneaker", "S-402": "sneaker",
    "S-403": "sneaker", "S-404": "boot", "S-405": "boot", "S-406": "tallboot", "S-407": "shoe", "S-408": "shoe",
    "S-409": "sandal", "S-410": "flipflop", "S-411": "slipper", "S-412": "tallboot", "A-501": "tote", "A-502": "bag",
    "A-503": "backpack", "A-504": "belt", "A-505": "cap", "A-506": "beanie", "A-507": "scarf", "A-508": "scarf",
    "A-509": "socks", "A-510": "gloves", "A-511": "glasses", "A-512": "wallet",
}


def main() -> None:
    """Regenerate every product's picture named in ``catalog.yaml``."""
    products = yaml.safe_load((HERE / "catalog.yaml").read_text(encoding="utf-8"))
    for index, product in enumerate(products["products"]):
        target = HERE / product["pictures"][0]
        target.parent.mkdir(parents=True, exist_ok=True)
        colour = PALETTE[(index * 7) % len(PALETTE)]
        target.write_text(svg(product["sku"], KINDS[product["sku"]], colour), encoding="utf-8")


if __name__ == "__main__":
    main()
