"""``optobot followups list`` and ``optobot followups cancel ID``: what is still to be sent, and cancelling one."""
from __future__ import annotations

import argparse
import sys
from zoneinfo import ZoneInfo

from bot.config import Settings
from bot.db.session import database
from bot.followups.upcoming import cancel, line, upcoming


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    followups = subparsers.add_parser("followups", help="stage messages, surveys, reminders and tasks still to come")
    commands = followups.add_subparsers(dest="followups_command", required=True)
    commands.add_parser("list", help="what is scheduled, soonest first (times in TIMEZONE)").set_defaults(func=list_upcoming)
    cancelling = commands.add_parser("cancel", help="cancel one that is not sent yet")
    cancelling.add_argument("id", type=int, metavar="ID", help="the number #ID shown by list")
    cancelling.set_defaults(func=cancel_one)


async def list_upcoming(settings: Settings, _: argparse.Namespace) -> int:
    async with database(settings.database_url, upgrade=True) as db:
        rows = await upcoming(db)
    tz = ZoneInfo(settings.timezone)
    for row, lead in rows:
        print(line(row, lead, settings.default_language, tz))
    if not rows:
        print("nothing is scheduled")
    return 0


async def cancel_one(settings: Settings, args: argparse.Namespace) -> int:
    async with database(settings.database_url, upgrade=True) as db:
        done = await cancel(db, args.id, "optobot followups cancel")
    if not done:
        print(f"optobot: followups cancel: #{args.id} is not scheduled (sent, cancelled or unknown); see optobot followups list",
              file=sys.stderr)
        return 1
    print(f"cancelled #{args.id}")
    return 0
