"""Benchmark of a big catalogue import: ``python -m bench.catalog_import [--offers 5000]``.

Writes a YML feed of ``offers`` offers in 25 categories, each with one local JPEG picture (1200 × 900, drawn with Pillow
before the clock starts), and a supplier folder with 3 tiers. Then, in a fresh process each time (so the peak RSS is
the import's own, ``VmHWM``):

- **first import**: parse, validate, normalise every picture (longest side 800 px), write the version, switch to it;
- **again**: the same feed once more (pictures already stored by content: only read and hashed);
- **load**: the imported catalogue read back as the service reads it, and the XLSX price list of all of it.

The load average of the machine is printed with the figures (other jobs share the cores); ``cpu_s`` (the process's CPU
time, every thread) moves less with it than the wall-clock seconds.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CATEGORIES = 25
COMPANY = Path(__file__).resolve().parents[1] / "samples" / "clothing"


def write_feed(root: Path, offers: int) -> Path:
    """The feed, its pictures and the supplier folder under ``root``; the feed's path."""
    from PIL import Image, ImageDraw

    pictures = root / "feed" / "pictures"
    pictures.mkdir(parents=True)
    for index in range(offers):
        image = Image.new("RGB", (1200, 900), (40 + index * 7 % 200, 80 + index * 13 % 160, 120 + index * 3 % 120))
        ImageDraw.Draw(image).ellipse((300, 150, 900, 750), fill=(240, 230, 200))
        image.save(pictures / f"{index}.jpg", quality=80)
    categories = "".join(f'<category id="{c}">Категория {c}</category>' for c in range(1, CATEGORIES + 1))
    items = "".join(
        f'<offer id="{i}" available="{"false" if i % 17 == 0 else "true"}"><name>Товар номер {i}</name>'
        f"<vendorCode>SKU-{i:05d}</vendorCode><price>{100 + i % 900}</price><currencyId>RUR</currencyId>"
        f"<categoryId>{1 + i % CATEGORIES}</categoryId><picture>pictures/{i}.jpg</picture>"
        f'<description>Описание товара {i}</description><param name="Материал">хлопок</param>'
        f'<param name="Размер">42</param><param name="Размер">44</param><param name="Страна">Россия</param></offer>'
        for i in range(offers))
    feed = root / "feed" / "feed.xml"
    feed.write_text(f'<?xml version="1.0" encoding="UTF-8"?><yml_catalog date="2026-11-30"><shop><name>Bench</name>'
                    f"<categories>{categories}</categories><offers>{items}</offers></shop></yml_catalog>", encoding="utf-8")
    folder = root / "supplier"
    folder.mkdir()
    for name in ("company.yaml", "logo.svg"):
        shutil.copy(COMPANY / name, folder)
    (folder / "catalog.yaml").write_text("currency: RUB\ntiers:\n  - {id: a, name: до 100 тыс ₽}\n"
                                         "  - {id: b, name: 100–500 тыс ₽, discount: 5}\n  - {id: c, name: от 500 тыс ₽, discount: 10}\n",
                                         encoding="utf-8")
    (folder / "mapping.yaml").write_text("category: {all: " + json.dumps([f"Категория {c}" for c in range(1, CATEGORIES + 1)],
                                                                        ensure_ascii=False) + "}\nvolume: {s: a}\n", encoding="utf-8")
    (folder / "import.yaml").write_text("params:\n  variants: Размер\n", encoding="utf-8")
    return feed


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _import(root: Path) -> dict[str, object]:
    import httpx

    from bot.catalog.importer import read_mapping, run_import
    from bot.catalog.store import Store

    folder, feed = root / "supplier", root / "feed" / "feed.xml"
    started = time.perf_counter()
    async with httpx.AsyncClient() as client:
        report = await run_import(Store(folder, root / "data"), feed.name, feed.read_bytes(), mapping=read_mapping(folder, None),
                                  base=feed.parent, client=client)
    return {"seconds": round(time.perf_counter() - started, 2), "status": report.status, "accepted": report.accepted,
            "pictures": report.pictures, "rejected": len(report.rejected)}


def _load(root: Path) -> dict[str, object]:
    from bot.catalog.pricelist import price_list
    from bot.catalog.store import Store

    started = time.perf_counter()
    catalogue = Store(root / "supplier", root / "data").current()
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    xlsx = price_list(catalogue, "b", "ru")
    return {"load_s": round(loaded, 2), "products": len(catalogue.products), "xlsx_s": round(time.perf_counter() - started, 2),
            "xlsx_kb": len(xlsx) // 1024}


def child(step: str, root: Path) -> None:
    """One measured step in this process; prints its figures as JSON (CPU seconds of all its threads too)."""
    figures = asyncio.run(_import(root)) if step == "import" else _load(root)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({**figures, "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "peak_rss_mb": round(peak_rss_mb(), 1)}))


def run(step: str, root: Path) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-m", "bench.catalog_import", "--child", step, "--root", str(root)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offers", type=int, default=5000)
    parser.add_argument("--child", choices=("import", "load"))
    parser.add_argument("--root", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.root)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        write_feed(root, args.offers)
        feed = root / "feed" / "feed.xml"
        print(f"feed: {args.offers} offers, {feed.stat().st_size // 1024} KB, {args.offers} pictures "
              f"(written in {time.perf_counter() - started:.1f} s, not timed)")
        for label, step in (("first import", "import"), ("again (pictures stored)", "import"), ("load + XLSX", "load")):
            figures = run(step, root)
            print(f"{label}: {json.dumps(figures, ensure_ascii=False)}; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
