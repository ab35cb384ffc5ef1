"""``optobot demo|run|check|db|catalog|crm|amocrm|broadcast|report|analytics``: one entry point for every job."""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

import structlog

from bot.analytics import cli as analytics_cli
from bot.catalog import cli as catalog_cli
from bot.config import ConfigError, Settings, first_line, load_settings
from bot.crm import cli as crm_cli
from bot.instances import ROLES
from bot.logs import setup_logging
from broadcasts import cli as broadcast_cli

if TYPE_CHECKING:
    from broadcasts.service import Broadcasts

log = structlog.get_logger(__name__)

Command = Callable[[Settings, argparse.Namespace], Awaitable[int | None]]


def wired_broadcasts(settings: Settings) -> AbstractAsyncContextManager[Broadcasts]:
    """The broadcasts of the whole app (loaded only for the command that needs it)."""
    from bot.app import wired_broadcasts

    return wired_broadcasts(settings)


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run the service for real (``--role``: web, worker or all); without BOT_TOKEN, run the sandbox demo instead."""
    if settings.sandbox:
        print("BOT_TOKEN is not set: running the built-in sandbox demo (see README to run for real).\n")
        return await demo(settings, args)
    from bot.app import create_app

    app = create_app(settings, role=getattr(args, "role", "all"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await app.start()
        await app.serve(stop=stop)
    finally:
        await app.close()
    return 0


async def demo(settings: Settings, _: argparse.Namespace) -> int:
    from bot.demo import run_demo

    return await run_demo(settings)


async def check(settings: Settings, _: argparse.Namespace) -> int:
    """Validate the configuration and reach every dependency; print what is wrong."""
    from bot.checks import run_checks

    return await run_checks(settings)


async def db_upgrade(settings: Settings, _: argparse.Namespace) -> int:
    from bot.db import migrate
    from bot.db.session import database

    async with database(settings.database_url, upgrade=True) as db:
        print("database is at", ", ".join(sorted(await migrate.current(db.engine))))
    return 0


def operator_names(settings: Settings) -> dict[int, str]:
    """amoCRM user → name of the managers in the operators file (the reports name the responsible managers)."""
    from bot.relay.config import load_roster

    try:
        roster = load_roster(settings.operators_config)
    except ValueError as exc:
        raise ConfigError(f"optobot: OPERATORS_CONFIG: {exc}") from None
    return {operator.amocrm_user_id: operator.name for operator in roster.operators if operator.amocrm_user_id}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="optobot", description="Telegram sales assistant and broadcasts for amoCRM suppliers")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("demo", help="play a scripted buyer against the built-in sandbox").set_defaults(func=demo)
    run_parser = commands.add_parser("run", help="run the service (the sandbox demo when BOT_TOKEN is unset)")
    run_parser.add_argument("--role", choices=ROLES, default="all",
                            help="web: HTTP and Telegram updates; worker: the background work; all: both (default)")
    run_parser.set_defaults(func=run)
    commands.add_parser("check", help="validate the configuration and reach every dependency").set_defaults(func=check)
    db = commands.add_parser("db", help="database migrations").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="apply all migrations").set_defaults(func=db_upgrade)
    catalog_cli.register(commands)
    crm_cli.register(commands)
    broadcast_cli.register(commands, wired_broadcasts)
    analytics_cli.register(commands, operator_names)
    return parser


def execute(func: Command, args: argparse.Namespace, *, quiet: bool = False) -> int:
    """Load the settings, set up the log (``quiet``: warnings only in the sandbox) and run a command; its exit code.

    Every failure is one or two lines on stderr: 2 for the configuration (a setting, a file it names, a
    dependency it points at), 1 for anything else (its traceback in the log at debug level).
    """
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    quiet = (quiet and settings.sandbox or func is check) and settings.log_level.upper() != "DEBUG"  # check: its lines are the output
    setup_logging("WARNING" if quiet else settings.log_level, secrets=settings.secrets(), json=settings.log_format == "json")
    try:
        return asyncio.run(func(settings, args)) or 0
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a failure, not a traceback: the log has it at debug level
        log.debug("command.failed", exc_info=True)
        print(f"optobot: {func.__name__} failed: {type(exc).__name__}: {first_line(exc)} (LOG_LEVEL=DEBUG shows the traceback)",
              file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    func: Command = getattr(args, "func", run)
    sys.exit(execute(func, args, quiet=func in (demo, run)))
