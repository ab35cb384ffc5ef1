"""``python -m broadcasts COMMAND …``: the broadcast commands without the rest of optobot's CLI."""
from __future__ import annotations

import argparse
import asyncio
import sys

from bot.cli import wired_broadcasts
from bot.config import ConfigError, load_settings
from bot.logs import setup_logging
from broadcasts.cli import add_commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m broadcasts", description="optobot broadcasts")
    add_commands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True), wired_broadcasts)
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    return asyncio.run(args.func(settings, args)) or 0


if __name__ == "__main__":
    sys.exit(main())
