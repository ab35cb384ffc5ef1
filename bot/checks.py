"""``optobot check``: every file a setting names and every dependency, one line each.

``OK`` with what was found, ``FAIL`` with the reason and what to do, ``SKIP`` with why the check does not
apply (e.g. amoCRM not configured); exit code 1 on any FAIL. A check never stops the others and never
prints a traceback (``LOG_LEVEL=DEBUG`` logs it).
"""
from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import structlog
import yaml
from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramUnauthorizedError
from aiogram.types import User
from alembic.script import ScriptDirectory
from redis.asyncio import Redis
from sqlalchemy.exc import SQLAlchemyError

from bot.catalog.model import CatalogError, mapping_problems
from bot.catalog.store import Store
from bot.config import ConfigError, Settings, first_line
from bot.crm import channel
from bot.crm.client import AmoAuthError, AmoBlocked, AmoClient, AmoError
from bot.crm.config import CrmConfig, load_crm_config
from bot.crm.discovery import discover
from bot.crm.service import amo_client
from bot.db import migrate
from bot.db.session import Database, open_database
from bot.quiz import Quiz, load_quiz
from bot.ratelimit import Window
from bot.relay.config import load_roster
from bot.telegram import create_bot
from bot.telegram_webhook import TELEGRAM_WEBHOOK_PATH
from broadcasts.content import Renderer
from broadcasts.segments import Segment
from broadcasts.sequences import load_sequences

log = structlog.get_logger(__name__)

TIMEOUT = 10.0  # seconds a dependency may take to answer
RECENT = timedelta(hours=1)  # a Telegram delivery error this recent fails the webhook check


class Fail(Exception):
    """The check failed: the message says why and what to do."""


class Skip(Exception):
    """The check does not apply: the message says why."""


class Warn(Exception):
    """The check passed with something to fix that does not stop the service: the message says what."""


@dataclass
class Checks:
    """The checks in order; later ones use what earlier ones found (the bot, the quiz)."""

    settings: Settings
    lines: list[tuple[str, str, str]] = field(default_factory=list)
    bot: Bot | None = None
    me: User | None = None
    quiz: Quiz | None = None

    async def run(self) -> int:
        s = self.settings
        try:
            await self.one("QUIZ_CONFIG", self.quiz_file)
            await self.one("CATALOG_DIR", self.catalogue)
            await self.one("quiz → catalogue", self.quiz_catalogue)
            await self.one("CRM_CONFIG", lambda: _loaded(f"events: {len(load_crm_config(s.crm_config).events)}", s.crm_config))
            await self.one("OPERATORS_CONFIG", self.operators_file)
            await self.one("BROADCAST_SEQUENCES", self.sequences)
            await self.one("BROADCAST_SEGMENTS", self.segments)
            await self.one("DATA_DIR", self.data_dir)
            await self.one("database", self.database)
            await self.one("redis", self.redis)
            await self.one("webhooks", self.webhooks)
            await self.one("telegram", self.telegram)
            await self.one("telegram webhook", self.telegram_webhook)
            await self.one("operator group", self.operator_group)
            await self.amocrm()
        finally:
            if self.bot is not None:
                await self.bot.session.close()
        width = max(len(status) for _, status, _ in self.lines)
        for name, status, detail in self.lines:
            print(f"{status:<{width}} {name}: {detail}")
        return 1 if any(status == "FAIL" for _, status, _ in self.lines) else 0

    async def one(self, name: str, check: Callable[[], Awaitable[str] | str]) -> None:
        """Run a check and keep its line."""
        try:
            result = check()
            detail = await result if isinstance(result, Awaitable) else result
            self.lines.append((name, "OK", detail))
        except Skip as exc:
            self.lines.append((name, "SKIP", str(exc)))
        except Warn as exc:
            self.lines.append((name, "WARN", str(exc)))
        except Fail as exc:
            self.lines.append((name, "FAIL", str(exc)))
        except ConfigError as exc:  # a loader's verdict on a file: already one line naming it
            self.lines.append((name, "FAIL", str(exc).removeprefix("optobot: ")))
        except Exception as exc:  # any other failure is this check's, not the command's
            log.debug("check.failed", check=name, exc_info=True)
            self.lines.append((name, "FAIL", f"{type(exc).__name__}: {first_line(exc)}"))

    # ------------------------------------------------------------------ files
    def quiz_file(self) -> str:
        self.quiz = load_quiz(self.settings.quiz_config)
        return _loaded(f"questions: {len(self.quiz.questions)}", self.settings.quiz_config)

    def catalogue(self) -> str:
        store = Store(self.settings.catalog_dir, self.settings.data_dir)
        try:
            catalogue = store.current()
        except CatalogError as exc:
            raise Fail(str(exc)) from None
        imported = f"imported version {store.active()}" if store.active() else f"version {catalogue.version}"
        return _loaded(f"products: {len(catalogue.products)}, categories: {len(catalogue.categories)}, "
                       f"tiers: {len(catalogue.tiers)}, {imported}", self.settings.catalog_dir)

    def quiz_catalogue(self) -> str:
        """The quiz → catalogue mapping (``mapping.yaml``): every quiz option maps somewhere, every stocked category is
        reached."""
        if self.quiz is None:
            raise Skip("needs a readable QUIZ_CONFIG")
        try:
            catalogue = Store(self.settings.catalog_dir, self.settings.data_dir).current()
        except CatalogError:
            raise Skip("needs a readable catalogue") from None
        problems = mapping_problems(catalogue, self.quiz)
        if problems:
            raise Fail("; ".join(problems))
        return "every quiz category and volume option maps to the catalogue, every category is reached"

    def operators_file(self) -> str:
        roster = load_roster(self.settings.operators_config)
        return _loaded(f"managers: {len(roster.operators)}, templates: {len(roster.titles)}", self.settings.operators_config)

    def sequences(self) -> str:
        path = self.settings.broadcast_sequences
        if not path.is_file():
            raise Fail(f"no such file: {path} (a file with `sequences: []` turns the warm-up off)")
        renderer = Renderer(self.quiz or load_quiz(self.settings.quiz_config), self.settings.default_language)
        return _loaded(f"sequences: {len(load_sequences(path, renderer))}", path)

    def segments(self) -> str:
        path = self.settings.broadcast_segments
        if not path.is_file():
            raise Fail(f"no such file: {path}")
        presets = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("presets") or []
        for number, preset in enumerate(presets, 1):
            try:
                Segment(**preset["segment"])
            except (KeyError, TypeError, ValueError) as exc:
                raise Fail(f"{path}: preset {number}: {first_line(exc)}") from None
        return _loaded(f"ready segments: {len(presets)}", path)

    def data_dir(self) -> str:
        folder = self.settings.data_dir.resolve()
        existing = next(path for path in (folder, *folder.parents) if path.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise Fail(f"{existing} is not a folder this user may write to (the catalogues are cached under DATA_DIR)")
        return f"{folder} is writable" if existing == folder else f"{folder} will be created at start"

    # ---------------------------------------------------------- dependencies
    async def database(self) -> str:
        db = open_database(self.settings.database_url)
        try:
            current = await migrate.current(db.engine)
        except (OSError, SQLAlchemyError) as exc:
            raise Fail(f"cannot connect to DATABASE_URL ({first_line(exc)}): check the address, the credentials and the server") from None
        finally:
            await db.close()
        heads = set(ScriptDirectory.from_config(migrate.alembic_config()).get_heads())
        kind = db.engine.dialect.name
        if current != heads:
            missing = ", ".join(sorted(heads - current))
            raise Fail(f"{kind} is not migrated ({'no tables' if not current else f'missing {missing}'}): run `optobot db upgrade` "
                       "(`optobot run` migrates at start)")
        return f"{kind}, at the latest migrations ({', '.join(sorted(current))})"

    async def redis(self) -> str:
        url = self.settings.redis_url
        if not url:
            raise Skip("REDIS_URL not set: rate limits are per instance (set it to run several instances)")
        client = Redis.from_url(url, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT)
        try:
            await client.ping()
        except Exception as exc:
            raise Fail(f"cannot connect to REDIS_URL ({first_line(exc)}): is the server running at that address?") from None
        finally:
            await client.aclose()
        return f"PONG from {url.rsplit('@', 1)[-1]}"

    def webhooks(self) -> str:
        if self.settings.webhook_secret is None:
            raise Skip("off: WEBHOOK_SECRET is not set, the Marquiz and amoCRM webhooks answer 404")
        return f"/webhooks/marquiz|amocrm/<secret> on {self.settings.http_host}:{self.settings.http_port}"

    async def telegram(self) -> str:
        s = self.settings
        if s.bot_token is None:
            raise Skip("BOT_TOKEN not set: only the sandbox demo runs")
        self.bot = create_bot(s.bot_token.get_secret_value(), s.telegram_api_url, retry_flood=False)
        try:
            self.me = await self.bot.me()
        except TelegramUnauthorizedError:
            raise Fail("Telegram refused BOT_TOKEN: copy the token again from @BotFather") from None
        except (TelegramAPIError, OSError) as exc:
            raise Fail(f"cannot reach Telegram at TELEGRAM_API_URL={s.telegram_api_url} ({first_line(exc)})") from None
        return f"@{self.me.username} via {s.telegram_api_url}"

    async def telegram_webhook(self) -> str:
        s = self.settings
        if not s.public_url:
            raise Skip("PUBLIC_URL not set: updates come by long polling")
        bot = self._bot()
        info = await bot.get_webhook_info()
        expected = s.public_url + TELEGRAM_WEBHOOK_PATH
        if not info.url:
            raise Fail(f"no webhook registered: `optobot run` registers {expected} at start")
        if info.url != expected:
            raise Fail(f"registered to {info.url}, expected {expected} (PUBLIC_URL): another deployment gets the updates?")
        if info.last_error_date and datetime.now(timezone.utc) - info.last_error_date < RECENT:
            at = info.last_error_date.astimezone().strftime("%H:%M")
            raise Fail(f"Telegram could not deliver to {expected} at {at}: {info.last_error_message}")
        return f"{expected}, updates waiting: {info.pending_update_count}"

    async def operator_group(self) -> str:
        chats = self.settings.operator_chats
        if not chats:
            raise Skip("OPERATOR_CHAT_ID not set: no operator chat")
        return "; ".join([await self._operator_group(chat_id) for chat_id in chats])

    async def _operator_group(self, chat_id: int) -> str:
        bot = self._bot()
        try:
            chat = await bot.get_chat(chat_id)
            member = await bot.get_chat_member(chat_id, self.me.id)  # type: ignore[union-attr]
        except TelegramAPIError as exc:
            raise Fail(f"operator group {chat_id} (OPERATOR_CHAT_ID, OPERATOR_CHAT_IDS): {first_line(exc)} (is the bot in that group?)") from None
        if member.status not in ("administrator", "creator"):
            raise Fail(f"the bot is not an administrator in «{chat.title}»: make it one with «Manage topics» (docs/operator-chat.md)")
        if not chat.is_forum:
            raise Fail(f"topics are off in «{chat.title}»: the bot falls back to the reply mode; turn Topics on (group → Edit → Topics)")
        if not getattr(member, "can_manage_topics", False):
            raise Fail(f"the bot may not manage topics in «{chat.title}»: give it the «Manage topics» right")
        return f"«{chat.title}»: the bot is an administrator, topics on"

    def _bot(self) -> Bot:
        if self.me is None or self.bot is None:
            raise Skip("needs a working BOT_TOKEN")
        return self.bot

    async def amocrm(self) -> None:
        """Two lines: the token (and the account behind it), then the pipelines, stages, fields and users named in CRM_CONFIG."""
        s = self.settings
        if not s.amocrm_base_url:
            for name in ("amoCRM", "amoCRM funnel", "amoCRM chat channel", "amoCRM reminder tasks"):
                self.lines.append((name, "SKIP", "AMOCRM_BASE_URL not set: CRM work is queued, not sent"))
            return
        async with _amocrm(s) as (client, config, db, http):
            account: dict[str, Any] = {}

            async def reach() -> str:
                try:
                    account.update(await client.get("/api/v4/account") or {})
                except AmoAuthError as exc:
                    raise Fail(f"{first_line(exc)} (AMOCRM_ACCESS_TOKEN, or `optobot amocrm login` for OAuth)") from None
                except AmoBlocked as exc:
                    raise Fail(f"amoCRM refuses every request ({first_line(exc)}): blocked for exceeding the rate, or not paid") from None
                except AmoError as exc:
                    raise Fail(f"cannot reach AMOCRM_BASE_URL={s.amocrm_base_url} ({first_line(exc)})") from None
                return f"account «{account.get('subdomain')}» (#{account.get('id')}) at {s.amocrm_base_url}"

            async def funnel() -> str:
                if not account:
                    raise Skip("needs a working amoCRM token")
                found, problems = await discover(client, config, self.quiz or load_quiz(s.quiz_config))
                if problems:
                    raise Fail("; ".join(problems))
                reason = f", loss reason «{config.duplicate_loss_reason}»" if found.loss_reason_id else ""
                summary = (f"stages: {len(found.stages)}, lead fields: {len(found.lead_fields)}, contact fields: "
                           f"{len(found.contact_fields)}{reason}, time zone {found.timezone or 'not given'}")
                if found.warnings:
                    raise Warn(f"{summary}; " + "; ".join(found.warnings))
                return summary

            async def chat_channel() -> str:
                if not s.channel:
                    raise Skip("AMOCRM_CHANNEL_ID / AMOCRM_CHANNEL_SECRET not set: the conversation reaches amoCRM as notes")
                async with db() as session:
                    stored = await channel.connected(session)
                if stored is None or stored["channel_id"] != s.amocrm_channel_id:
                    raise Fail("the channel is not connected to the account: run `optobot amocrm connect-channel`")
                chats = channel.channel_client(s, http, Window(s.amocrm_rps), config.client)
                try:
                    answer = await chats.connect(stored["amojo_id"], stored.get("title") or "Telegram")
                except AmoError as exc:
                    raise Fail(f"{first_line(exc)} (AMOJO_BASE_URL={s.amojo_base_url})") from None
                if answer.get("scope_id") != stored["scope_id"]:
                    raise Fail("amoCRM answers another scope_id than the stored one: run `optobot amocrm connect-channel`")
                notes = "on" if s.message_notes else "off"
                return f"connected, scope {stored['scope_id']}: amoCRM hooks to /webhooks/amojo/<scope_id>; message notes {notes}"

            async def reminder_tasks() -> str:
                if s.reminder_task_type is None:
                    raise Skip("REMINDER_TASK_TYPE not set: amoCRM tasks do not remind the buyer")
                if not account:
                    raise Skip("needs a working amoCRM token")
                types = {t["id"]: t.get("name") for t in ((await client.get("/api/v4/account", {"with": "task_types"}) or {})
                                                            .get("_embedded") or {}).get("task_types") or []}
                if s.reminder_task_type not in types:
                    listed = ", ".join(f"{type_id} «{name}»" for type_id, name in types.items())
                    raise Fail(f"REMINDER_TASK_TYPE={s.reminder_task_type} is not a task type of the account; its types: {listed}")
                return f"tasks of type «{types[s.reminder_task_type]}» (#{s.reminder_task_type}) on a buyer's deal remind the buyer"

            await self.one("amoCRM", reach)
            await self.one("amoCRM funnel", funnel)
            await self.one("amoCRM chat channel", chat_channel)
            await self.one("amoCRM reminder tasks", reminder_tasks)


def _loaded(what: str, path: object) -> str:
    return f"{what} in {path}"


@asynccontextmanager
async def _amocrm(settings: Settings) -> AsyncIterator[tuple[AmoClient, CrmConfig, Database, httpx.AsyncClient]]:
    """An amoCRM client for one quick look: no retries, a short timeout."""
    config = load_crm_config(settings.crm_config)
    config = config.model_copy(update={"client": config.client.model_copy(update={"attempts": 1, "timeout": TIMEOUT})})
    db = open_database(settings.database_url)
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        try:
            yield amo_client(settings, db, http, Window(settings.amocrm_rps), config), config, db, http
        finally:
            await db.close()


async def run_checks(settings: Settings) -> int:
    """Run every check, print one line each; exit code 1 if any failed."""
    return await Checks(settings).run()
