"""``python -m broadcasts COMMAND …``: the broadcast commands without the rest of optobot's CLI."""
from __future__ import annotations

import argparse
import sys

from bot.cli import execute, wired_broadcasts
from broadcasts.cli import add_commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m broadcasts", description="optobot broadcasts")
    add_commands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True), wired_broadcasts)
    args = parser.parse_args(argv)
    return execute(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
