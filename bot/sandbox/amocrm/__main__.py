"""``python -m bot.sandbox.amocrm [--host 127.0.0.1] [--port 0] [--rate-limit 7]``: serve the seeded sandbox amoCRM on its own.

Prints one JSON line, ``{"base_url": …, "token": …}`` (``AMOCRM_BASE_URL``, ``AMOCRM_ACCESS_TOKEN``), then serves until
stopped. ``--port 0`` takes a free port; ``--rate-limit 0`` turns the 429s off. What it saw: the control routes
``GET /sandbox/requests`` and ``GET /sandbox/notes`` (see :mod:`bot.sandbox.amocrm.server`).
"""
from __future__ import annotations

import argparse
import asyncio
import json

from bot.sandbox.amocrm import start_sandbox_amocrm


async def serve(host: str, port: int, rate_limit: int | None) -> None:
    sandbox, base_url, token = await start_sandbox_amocrm(host, port, rate_limit=rate_limit)
    print(json.dumps({"base_url": base_url, "token": token}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sandbox.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rate-limit", type=int, default=7, help="requests per second before 429 (0: no limit)")
    options = parser.parse_args()
    try:
        asyncio.run(serve(options.host, options.port, options.rate_limit or None))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
