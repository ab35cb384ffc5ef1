"""``python -m bot.sandbox [--port 8081]``: serve the sandbox Telegram Bot API on its own.

Point the bot at it with ``TELEGRAM_API_URL=http://127.0.0.1:8081``; drive users through
the JSON control API under ``/sandbox/...`` (see :mod:`bot.sandbox.telegram.control`).
"""
from __future__ import annotations

import argparse
import asyncio

from bot.sandbox.telegram import TelegramSandbox


async def serve(host: str, port: int, token: str) -> None:
    sandbox = TelegramSandbox(token=token)
    print(await sandbox.start(host, port), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sandbox.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--token", default="123456:TEST")
    options = parser.parse_args()
    try:
        asyncio.run(serve(options.host, options.port, options.token))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
