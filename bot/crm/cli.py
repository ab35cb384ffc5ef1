"""``optobot crm status|retry`` and ``optobot amocrm login <code> | connect-channel | disconnect-channel``.

:func:`register` adds the sub-commands; each sets ``func``: ``async (Settings, Namespace) -> int``.
"""
from __future__ import annotations

import argparse
from datetime import datetime

import httpx

from bot.config import Settings
from bot.crm import channel, outbox, store
from bot.crm.client import AmoError
from bot.crm.config import load_crm_config
from bot.crm.models import FAILED, PENDING, RETRY, SENDING
from bot.crm.service import amo_client, oauth_tokens
from bot.db.base import utcnow
from bot.db.session import database
from bot.ratelimit import Window


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    crm = subparsers.add_parser("crm", help="amoCRM sync queue")
    crm_commands = crm.add_subparsers(dest="crm_command", required=True)
    crm_commands.add_parser("status", help="pending, retrying and failed CRM operations").set_defaults(func=status)
    retry_parser = crm_commands.add_parser("retry", help="re-queue failed CRM operations and resume a stopped sync")
    retry_parser.add_argument("ids", nargs="*", type=int, help="only these outbox ids")
    retry_parser.set_defaults(func=retry)
    amocrm = subparsers.add_parser("amocrm", help="amoCRM OAuth")
    amocrm_commands = amocrm.add_subparsers(dest="amocrm_command", required=True)
    login_parser = amocrm_commands.add_parser("login", help="exchange an authorization code for the token pair")
    login_parser.add_argument("code", help="the authorization code from the integration (valid 20 minutes)")
    login_parser.set_defaults(func=login)
    connect_parser = amocrm_commands.add_parser("connect-channel", help="connect the chat channel (AMOCRM_CHANNEL_*) to the account")
    connect_parser.add_argument("--title", default="Telegram", help="the channel's name in amoCRM (default: Telegram)")
    connect_parser.set_defaults(func=connect_channel)
    amocrm_commands.add_parser("disconnect-channel", help="disconnect the chat channel").set_defaults(func=disconnect_channel)


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "-"
    seconds = int((now - moment).total_seconds())
    return f"{seconds // 3600} h {seconds % 3600 // 60} min" if seconds >= 3600 else f"{seconds // 60} min {seconds % 60} s"


async def status(settings: Settings, args: argparse.Namespace) -> int:
    """Print the sync state and the queue; exit code 1 if something failed or the sync is stopped."""
    now = utcnow()
    async with database(settings.database_url, upgrade=True) as db, db() as session:
        state = await store.read(session, store.STATE) or {"state": "not started"}
        counts = await outbox.counts(session)
        oldest = await outbox.oldest_pending(session)
        retrying = await outbox.listing(session, (RETRY,))
        failed = await outbox.listing(session, (FAILED,))
    target = settings.amocrm_base_url or "AMOCRM_BASE_URL is not set: operations are queued, not sent"
    print(f"amoCRM sync: {state['state']} ({target})")
    for problem in state.get("problems", []):
        print(f"  ! {problem}")
    if state.get("reason"):
        print(f"  ! {state['reason']} (since {state.get('since')}, next probe {state.get('retry_at')})")
    print(f"pending: {counts.get(PENDING, 0)}   sending: {counts.get(SENDING, 0)}   retrying: {counts.get(RETRY, 0)}"
          f"   failed: {counts.get(FAILED, 0)}   done: {counts.get('done', 0)}   oldest waiting: {_ago(oldest, now)}")
    for item in retrying:
        due = item.next_attempt_at.isoformat(timespec="seconds") if item.next_attempt_at else "now"
        print(f"  retrying #{item.id} {item.op}/{item.key} lead {item.lead_id}: attempt {item.attempts}, next {due}: {item.last_error}")
    for item in failed:
        print(f"  failed #{item.id} {item.op}/{item.key} lead {item.lead_id}: {item.last_error}")
    return 1 if counts.get(FAILED) or state["state"] in ("blocked", "unauthorized", "misconfigured") else 0


async def retry(settings: Settings, args: argparse.Namespace) -> int:
    """Failed items back to the queue; a stopped sync (403, token) resumes at the next round."""
    async with database(settings.database_url, upgrade=True) as db, db.begin() as session:
        requeued = await outbox.requeue_failed(session, args.ids or None)
        state = await store.read(session, store.STATE) or {}
        if state.get("state") in ("blocked", "unauthorized"):
            await store.write(session, store.STATE, {"state": "ok"})
            print(f"sync resumed (was {state['state']})")
    print(f"re-queued {requeued} failed item(s)")
    return 0


async def login(settings: Settings, args: argparse.Namespace) -> int:
    """Exchange the code, store the pair in the database (tokens are never printed)."""
    async with database(settings.database_url, upgrade=True) as db, httpx.AsyncClient(timeout=30) as http:
        tokens = oauth_tokens(settings, db, http, Window(settings.amocrm_rps), utcnow)
        try:
            expires = await tokens.login(args.code)
        except AmoError as exc:
            print(f"amoCRM login failed: {exc}")
            return 1
    print(f"amoCRM tokens stored; the access token is refreshed automatically (this one expires {expires.isoformat(timespec='minutes')})")
    return 0


async def connect_channel(settings: Settings, args: argparse.Namespace) -> int:
    """Read the account's amojo_id, connect the channel, store its scope_id (nothing secret is printed)."""
    settings.require("AMOCRM_BASE_URL", "AMOCRM_CHANNEL_ID", "AMOCRM_CHANNEL_SECRET")
    config = load_crm_config(settings.crm_config)
    async with database(settings.database_url, upgrade=True) as db, httpx.AsyncClient(timeout=config.client.timeout) as http:
        limiter = Window(settings.amocrm_rps)
        rest = amo_client(settings, db, http, limiter, config)
        try:
            value = await channel.connect(db, rest, channel.channel_client(settings, http, limiter, config.client), args.title)
        except AmoError as exc:
            print(f"connecting the amoCRM chat channel failed: {exc}")
            return 1
    print(f"amoCRM chat channel connected: scope_id {value['scope_id']} (account {value['amojo_id']}); "
          f"amoCRM sends managers' replies to <PUBLIC_URL>/webhooks/amojo/{value['scope_id']}")
    return 0


async def disconnect_channel(settings: Settings, args: argparse.Namespace) -> int:
    settings.require("AMOCRM_CHANNEL_ID", "AMOCRM_CHANNEL_SECRET")
    config = load_crm_config(settings.crm_config)
    async with database(settings.database_url, upgrade=True) as db, httpx.AsyncClient(timeout=config.client.timeout) as http:
        try:
            value = await channel.disconnect(db, channel.channel_client(settings, http, Window(settings.amocrm_rps), config.client))
        except AmoError as exc:
            print(f"disconnecting the amoCRM chat channel failed: {exc}")
            return 1
    print("the amoCRM chat channel was not connected" if value is None else f"amoCRM chat channel disconnected (scope_id {value['scope_id']})")
    return 0
