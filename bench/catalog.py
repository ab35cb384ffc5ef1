"""Benchmark of the personalised PDF catalogue: ``python -m bench.catalog``.

Cold renders of a 48-product catalogue (every buyer has a new name, so none is
cached) through :class:`CatalogRenderer`'s pool of 2 workers, ``concurrency``
requests in flight at a time, then cached lookups of an already rendered PDF.
``render_cpu_p50_s`` is the CPU time of one render (in a thread of this process),
which other load on the machine does not inflate.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import tempfile
import time
from pathlib import Path

from pypdf import PdfReader

from bot.catalog.render import CatalogRenderer, CatalogRequest, render_pdf
from bot.config import DEFAULT_CATALOG_DIR as CATALOG_DIR

PRODUCTS = 48
WORKERS = 2
#: Categories with at least 48 products between them; ``limit`` caps them at 48.
CATEGORIES = ("women", "men", "kids", "shoes")
TARGET_P95_S = 1.5


def _percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (``share`` in 0..1)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def _request(index: int) -> CatalogRequest:
    return CatalogRequest(name=f"Покупатель {index}", company=f"ООО «Опт-{index}»",
                          city="Новосибирск", categories=CATEGORIES, volume="100to300k",
                          limit=PRODUCTS)


def _render_cpu(index: int) -> float:
    """Thread CPU seconds of one in-process render."""
    begin = time.thread_time()
    render_pdf(_request(index), CATALOG_DIR)
    return time.thread_time() - begin


async def measure(n: int = 20, concurrency: int = WORKERS, lookups: int = 200) -> dict:
    """Cold render and cached lookup timings (seconds / milliseconds) as a dict."""
    with tempfile.TemporaryDirectory(prefix="bench-catalog-") as cache:
        renderer = CatalogRenderer(CATALOG_DIR, Path(cache), workers=WORKERS)
        try:
            started = time.perf_counter()
            await renderer.warm_up()
            warm_up = time.perf_counter() - started

            cold: list[float] = []
            queue = iter(range(n))

            async def client() -> None:
                for index in queue:
                    begin = time.perf_counter()
                    await renderer.render(_request(index))
                    cold.append(time.perf_counter() - begin)

            started = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(concurrency)))
            wall = time.perf_counter() - started

            cached: list[float] = []
            for _ in range(lookups):
                begin = time.perf_counter()
                path = await renderer.render(_request(0))
                cached.append(time.perf_counter() - begin)
            if renderer.rendered != n:
                raise RuntimeError("a cached lookup rendered again")
            pdf = path.read_bytes()
        finally:
            renderer.close()
    await asyncio.to_thread(_render_cpu, -1)  # load the catalogue in this process
    cpu = [await asyncio.to_thread(_render_cpu, -2 - index) for index in range(5)]
    return {
        "products": PRODUCTS,
        "workers": WORKERS,
        "concurrency": concurrency,
        "renders": n,
        "warm_up_s": round(warm_up, 3),
        "cold_p50_s": round(_percentile(cold, 0.50), 3),
        "cold_p95_s": round(_percentile(cold, 0.95), 3),
        "cold_max_s": round(max(cold), 3),
        "renders_per_s": round(n / wall, 2),
        "render_cpu_p50_s": round(_percentile(cpu, 0.50), 3),
        "cached_p50_ms": round(_percentile(cached, 0.50) * 1000, 3),
        "cached_p95_ms": round(_percentile(cached, 0.95) * 1000, 3),
        "pdf_kib": round(len(pdf) / 1024, 1),
        "pages": len(PdfReader(io.BytesIO(pdf)).pages),
        "target_p95_s": TARGET_P95_S,
        "meets_target": _percentile(cold, 0.95) < TARGET_P95_S,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="cold renders (default 20)")
    parser.add_argument("--concurrency", type=int, default=WORKERS,
                        help="renders in flight at a time (default: one per worker)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.n, args.concurrency)), indent=2))


if __name__ == "__main__":
    main()
