"""``optobot broadcast plan|preview|schedule|status|pause|resume|cancel|stats|send`` (also ``python -m broadcasts …``).

Every command works on the database only (migrated first, like the service): a campaign scheduled
here is sent by the running service (or by ``send``, the same engine in the foreground).
"""
from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import yaml

from bot.config import ConfigError, Settings
from bot.db.session import database
from bot.journal import Journal
from bot.quiz import load_quiz
from broadcasts import stats
from broadcasts.campaigns import CampaignError, CampaignSpec
from broadcasts.content import Renderer
from broadcasts.engine import AUTO_PAUSED, FINISHED_RUN, INVALID
from broadcasts.markup import plain
from broadcasts.models import RUNNING, SCHEDULED, SENT
from broadcasts.schedule import parse_when
from broadcasts.segments import Segment
from broadcasts.sequences import load_sequences
from broadcasts.service import Broadcasts

#: The broadcasts of the whole service (every journal subscriber wired), opened for one command.
Wired = Callable[[Settings], AbstractAsyncContextManager[Broadcasts]]


@asynccontextmanager
async def _broadcasts(settings: Settings) -> AsyncIterator[Broadcasts]:
    """The broadcasts service on the configured database, migrated first (as ``optobot run`` does)."""
    async with database(settings.database_url, upgrade=True) as db:
        service = Broadcasts(settings, db, Journal(), load_quiz(settings.quiz_config))
        try:
            yield service
        finally:
            await service.close()


def _spec(path: Path) -> CampaignSpec | None:
    try:
        return CampaignSpec.load(path)
    except CampaignError as exc:
        print(f"{path}: invalid campaign:\n{exc}")
        return None


async def _plan(service: Broadcasts, spec: CampaignSpec) -> bool:
    plan = await service.campaigns.plan(spec.segment, spec.content)
    mode = f"{service.rate:g} msg/s" + (" (paid broadcasts)" if service.paid else "")
    took = f"{plan.seconds:.0f} s" if plan.seconds < 120 else f"{plan.seconds / 60:.0f} min"
    print(f"«{spec.name}»: {plan.recipients} recipients, about {took} at {mode}")
    if plan.refused:
        print(f"{plan.failing} recipient(s) fail validation; nothing would be sent:" if plan.failing else "problems:")
    elif plan.skipped:
        print(f"{plan.skipped} recipient(s) will be skipped: the message breaks with their own values:")
    for problem in plan.problems:
        print(f"  - {problem}")
    return not plan.refused


def _holds_sequences(path: Path) -> bool:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False  # the campaign loader reports it
    return isinstance(raw, dict) and "sequences" in raw


def _check_sequences(settings: Settings, path: Path) -> int:
    """``plan`` on a sequences file: the checks the service makes at start."""
    try:
        specs = load_sequences(path, Renderer(load_quiz(settings.quiz_config), settings.default_language))
    except ConfigError as exc:
        print(f"invalid sequences:\n{exc}")
        return 1
    for spec in specs:
        print(f"«{spec.name}» ({spec.key}): {len(spec.steps)} steps, valid")
    return 0


async def plan(settings: Settings, args: argparse.Namespace) -> int:
    """Dry run: segment size, time to send at the configured rate, validation of every message (or of a sequences file)."""
    if _holds_sequences(args.file):
        return _check_sequences(settings, args.file)
    spec = _spec(args.file)
    if spec is None:
        return 1
    async with _broadcasts(settings) as service:
        return 0 if await _plan(service, spec) else 1


async def preview(settings: Settings, args: argparse.Namespace) -> int:
    """Segment size and a sample of names (a campaign file, or a file with just segment fields)."""
    raw = yaml.safe_load(args.file.read_text(encoding="utf-8")) or {}
    segment = Segment(**raw.get("segment", raw if "name" not in raw else {}))
    async with _broadcasts(settings) as service:
        found = await service.campaigns.preview(segment, args.sample)
    print(f"{found.recipients} recipients")
    for r in found.sample:
        name = " ".join(part for part in (r.first_name, r.last_name) if part) or "—"
        print(f"  #{r.id} {name} @{r.tg_username or '—'} [{r.stage}] {r.interests.get('city') or ''}".rstrip())
    return 0


async def schedule(settings: Settings, args: argparse.Namespace) -> int:
    """Validate, then store the campaign: at ``--at``, its ``send_at``, or now."""
    spec = _spec(args.file)
    if spec is None:
        return 1
    async with _broadcasts(settings) as service:
        if not await _plan(service, spec):
            return 1
        send_at = parse_when(args.at, settings.timezone) if args.at else None
        broadcast_id = await service.campaigns.create(spec, send_at=send_at, start=not args.draft)
        b = await service.campaigns.get(broadcast_id)
    print(plain(stats.headline(settings.default_language, b, settings.timezone)))
    return 0


async def status(settings: Settings, args: argparse.Namespace) -> int:
    """One broadcast's progress, or the recent ones."""
    lang = settings.default_language
    async with _broadcasts(settings) as service:
        if args.id is None:
            for b in await service.campaigns.recent(20):
                s = await service.campaigns.stats(b.id)
                print(f"#{b.id:<5} {b.state:<10} {s.total.states[SENT]:>7}/{s.total.recipients:<7} {b.name}")
            return 0
        s = await service.campaigns.stats(args.id)
        if s is None:
            print(f"no broadcast #{args.id}")
            return 1
        print(plain(stats.progress(lang, s, None, settings.timezone)))
    return 0


async def show_stats(settings: Settings, args: argparse.Namespace) -> int:
    """Delivered, blocked, failed, clicks per button, replies, unsubscribes, conversions; per A/B variant."""
    async with _broadcasts(settings) as service:
        s = await service.campaigns.stats(args.id)
    if s is None:
        print(f"no broadcast #{args.id}")
        return 1
    print(plain(stats.report(settings.default_language, s, settings.timezone)))
    return 0


def _control(action: str):  # noqa: ANN202
    async def command(settings: Settings, args: argparse.Namespace) -> int:
        async with _broadcasts(settings) as service:
            done = await getattr(service.campaigns, action)(args.id)
            b = await service.campaigns.get(args.id)
        print(f"#{args.id}: {b.state if b else 'not found'}" + ("" if done else f" ({action} not possible)"))
        return 0 if done else 1

    command.__doc__ = f"{action.capitalize()} a broadcast."
    return command


async def send(settings: Settings, args: argparse.Namespace) -> int:
    """Deliver one broadcast in the foreground with the service's engine, until it is no longer running."""
    outcome = None
    async with args.wired(settings) as service:  # every journal subscriber (CRM, sequences) sees what happens
        while True:
            await service.engine.due()  # a scheduled broadcast starts at its time
            b = await service.campaigns.get(args.id)
            if b is None or b.state not in (RUNNING, SCHEDULED):
                break
            outcome = await service.engine.run(args.id) if b.state == RUNNING else None
            if outcome in (FINISHED_RUN, AUTO_PAUSED, INVALID):
                break
            await asyncio.sleep(1)
        s = await service.campaigns.stats(args.id)
    if s is None:
        print(f"no broadcast #{args.id}")
        return 1
    print(plain(stats.progress(settings.default_language, s, None, settings.timezone)))
    return 0 if outcome == FINISHED_RUN else 1


def add_commands(commands: argparse._SubParsersAction, wired: Wired) -> None:
    """The broadcast commands on ``commands``; ``send`` runs in the service built by ``wired``."""
    def command(name: str, func: object, help_text: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text)
        parser.set_defaults(func=func)
        return parser

    command("plan", plan, "dry run of a campaign file: size, time to send, validation").add_argument("file", type=Path)
    p = command("preview", preview, "segment size and a sample of names")
    p.add_argument("file", type=Path, help="a campaign file or a file of segment fields")
    p.add_argument("--sample", type=int, default=10)
    p = command("schedule", schedule, "store a campaign file: sent at send_at, --at or now")
    p.add_argument("file", type=Path)
    p.add_argument("--at", help="when to send, e.g. '2026-12-01 10:00' (TIMEZONE unless an offset is given)")
    p.add_argument("--draft", action="store_true", help="store without scheduling")
    command("status", status, "progress of one broadcast, or the recent ones").add_argument("id", type=int, nargs="?")
    command("stats", show_stats, "full statistics of a broadcast").add_argument("id", type=int)
    for action in ("pause", "resume", "cancel"):
        command(action, _control(action), f"{action} a broadcast").add_argument("id", type=int)
    p = command("send", send, "deliver a broadcast in the foreground (without the service)")
    p.add_argument("id", type=int)
    p.set_defaults(wired=wired)


def register(subparsers: argparse._SubParsersAction, wired: Wired) -> None:
    """Add ``broadcast …`` to optobot's command line."""
    parser = subparsers.add_parser("broadcast", help="broadcasts: plan, schedule, watch and control")
    add_commands(parser.add_subparsers(dest="broadcast_command", metavar="COMMAND", required=True), wired)
