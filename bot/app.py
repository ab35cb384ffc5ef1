"""Composition root: builds every part from the settings and runs them together."""
from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import structlog
from aiogram import Bot, Dispatcher
from aiogram.exceptions import TelegramAPIError, TelegramNetworkError
from aiohttp import web

from bot.analytics.router import create_router as analytics_router
from bot.analytics.service import Analytics
from bot.catalog.imports import Imports
from bot.catalog.model import CatalogError, mapping_problems
from bot.catalog.render import CatalogRenderer
from bot.catalog.router import create_router as catalog_router
from bot.catalog.service import Catalog
from bot.catalog.store import Store
from bot.config import ConfigError, Settings, first_line
from bot.crm.service import CrmSync
from bot.db import migrate, webhook
from bot.db.session import open_database
from bot.fallback import create_router as fallback_router
from bot.followups.router import create_router as followups_router
from bot.followups.service import FollowUps
from bot.hours import WorkingHours
from bot.instances import Presence
from bot.journal import Journal
from bot.journey.intake import IntakeService
from bot.journey.router import create_router as journey_router
from bot.journey.service import JourneyService
from bot.journey.webhook import marquiz_handler
from bot.logs import add_secret
from bot.inbox import Inbox
from bot.loops import Worker
from bot.media import MEDIA_PATH, MediaLinks
from bot.messenger import Messenger
from bot.ops import Ops
from bot.quiz import load_quiz
from bot.receiver import Receiver, receiver_lock
from bot.relay.router import create_router as relay_router
from bot.relay.service import RelayService
from bot.sender import Sender
from bot.telegram import create_bot
from bot.telegram_webhook import TELEGRAM_WEBHOOK_PATH, telegram_handler
from bot.texts import LANGUAGES, t
from bot.web import Handler, create_web_app
from broadcasts.router import create_router as broadcasts_router
from broadcasts.service import Broadcasts

log = structlog.get_logger(__name__)

STOP_TIMEOUT = 30.0  # seconds from SIGTERM to exit: in-flight updates and the workers' rounds finish within it


def create_app(settings: Settings, *, role: str = "all") -> App:
    """The app for a command: a settings file whose content is wrong is a :class:`ConfigError` naming the setting."""
    try:
        return App(settings, role=role)
    except ValueError as exc:  # the loaders of the files named by settings say what is wrong, and where
        paths = {field.alias: str(getattr(settings, name)) for name, field in Settings.model_fields.items()
                 if isinstance(getattr(settings, name), Path)}
        named = sorted((alias for alias, path in paths.items() if path in str(exc)), key=lambda alias: -len(paths[alias]))  # a file, not its folder
        raise ConfigError(f"optobot: {named[0] + ': ' if named else ''}{first_line(exc)}") from None


class App:
    """Every part of optobot, wired once. ``start()`` prepares, ``serve()`` runs, ``close()`` releases.

    ``role``: ``web`` takes HTTP and Telegram's updates, ``worker`` runs the background work (its HTTP
    server answers only ``/healthz``, ``/readyz`` and ``/metrics``), ``all`` both.
    """

    def __init__(self, settings: Settings, *, bot: Bot | None = None, renderer: CatalogRenderer | None = None,
                 role: str = "all") -> None:
        self.settings = settings
        self.role = role
        self.db = open_database(settings.database_url)
        self.presence = Presence(self.db, role, redis_url=settings.redis_url)
        self.journal = Journal()
        self.quiz = load_quiz(settings.quiz_config)
        token = settings.bot_token.get_secret_value() if settings.bot_token else ""
        self.bot = bot or create_bot(token, settings.telegram_api_url)
        self._owns_renderer = renderer is None
        self.renderer = renderer or CatalogRenderer(settings.catalog_dir, settings.data_dir / "catalogs", workers=settings.render_workers,
                                                    data_dir=settings.data_dir)
        self.sender = Sender(self.bot, self.db, retry_for=settings.send_retry_for)
        self.messenger = Messenger(self.bot, self.db, self.journal, self.sender)
        store = Store(settings.catalog_dir, settings.data_dir)
        self.catalog = Catalog(self.db, self.renderer, store, settings.catalog_max_per_category)
        self.imports = Imports(settings, self.db, store, self.tell_admins)
        try:
            catalogue = self.catalog.catalogue()
        except CatalogError as exc:
            raise ConfigError(f"optobot: CATALOG_DIR: {exc}") from None
        for problem in mapping_problems(catalogue, self.quiz):  # reported at start; `optobot check` fails on them
            log.warning("catalog.mapping", problem=problem)
        self.intake = IntakeService(self.db, self.journal, self.quiz, settings.default_language)
        self.journey = JourneyService(
            self.db, self.journal, self.messenger, self.quiz, self.catalog,
            default_language=settings.default_language, token_ttl=timedelta(days=settings.start_token_ttl_days),
            hours=WorkingHours.parse(settings.working_hours, settings.working_days, settings.timezone),
        )
        self.media = MediaLinks(settings.amocrm_channel_secret.get_secret_value().encode(), self.public_base) if settings.channel else None  # type: ignore[union-attr]
        self.crm = CrmSync(settings, self.db, self.journal, self.quiz, media=self.media, messenger=self.messenger)
        self.journal.subscribe(self.crm.writer)
        self.workers: list[Worker] = [*self.crm.workers]
        if settings.catalog_prerender:
            languages = (settings.default_language, *(lang for lang in LANGUAGES if lang != settings.default_language))
            self.workers.append(lambda stop: self.renderer.prerender(stop, languages, settings.catalog_max_per_category))
        self.relay = RelayService(settings, self.db, self.journal, self.messenger, self.journey, self.catalog, self.quiz)
        self.journey.relay = self.relay
        if self.crm.replies is not None:
            self.crm.replies.topic = self.relay  # replies from amoCRM's chat shown in the lead's topic
        self.journal.subscribe(self.relay.on_record)
        self.workers.append(self.relay.run)
        self.followups = FollowUps(settings, self.db, self.journal, self.messenger, catalog=self.catalog, topic=self.relay)
        self.journal.subscribe(self.followups.on_record)
        self.relay.actions.reminders = self.followups.reminders  # the lead card's «Напомнить клиенту…»
        self.workers += self.followups.workers
        self.broadcasts = Broadcasts(settings, self.db, self.journal, self.quiz, messenger=self.messenger, catalog=self.catalog)
        self.journal.subscribe(self.broadcasts.on_record)
        self.workers += self.broadcasts.workers
        self.analytics = Analytics(settings, self.db, self.quiz, bot=self.bot, managers=self.manager_names)
        self.workers += self.analytics.workers
        self.workers += self.imports.workers
        self.routes: list[tuple[str, str, Handler]] = [
            ("POST", "/webhooks/marquiz/{secret}", marquiz_handler(self.intake, self.start_link)),
            *self.crm.routes,
            *([("GET", MEDIA_PATH, self.media.handler(self.bot))] if self.media else []),
        ]
        self.dp = Dispatcher(journey=self.journey, settings=settings, db=self.db)
        self.dp["relay"] = self.relay
        self.dp["broadcasts"] = self.broadcasts
        self.dp["analytics"] = self.analytics
        self.dp["followups"] = self.followups
        self.dp["imports"] = self.imports
        self.dp.include_router(analytics_router())  # admin commands, before the relay and the journey
        self.dp.include_router(broadcasts_router())  # before the relay (admin commands in the operator chat) and the journey
        self.dp.include_router(catalog_router())  # an admin's price list, after the broadcast wizard (it takes documents)
        self.dp.include_router(followups_router())  # before the relay and the journey (a reply to the survey)
        self.dp.include_router(relay_router())  # before the journey's catch-all
        self.dp.include_router(journey_router())
        self.dp.include_router(fallback_router())  # last: a button press nobody took is answered
        self.inbox = Inbox(self.db, self.dp, self.bot, handling_at_once=settings.inbox_handling_at_once)
        self.receiver = Receiver(receiver_lock(self.db.engine), self.bot, self.inbox, public_url=settings.public_url,
                                 allowed_updates=self.dp.resolve_used_update_types())
        self.ops = Ops(self.db, self.bot, settings.redis_url, probes=[self.crm.probe, self.inbox.probe])
        self.bot_username = ""
        self.http_port = settings.http_port
        self.ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._warming: asyncio.Future[None] | None = None

    async def tell_admins(self, text: str) -> None:
        """A notice (e.g. a catalogue refresh that was not applied) to every admin; one who can't be reached is logged."""
        for admin in sorted(self.settings.admin_ids):
            try:
                await self.bot.send_message(admin, t(self.settings.default_language, "catalog_import.report", text=text)[:4000])
            except TelegramAPIError as exc:
                log.warning("admin.unreachable", admin=admin, error=str(exc))

    def manager_names(self) -> dict[int, str]:
        """amoCRM user → name of the managers in the operators file (for analytics)."""
        return {o.amocrm_user_id: o.name for o in self.relay.chat.roster.operators if o.amocrm_user_id}

    def public_base(self) -> str:
        """The service's address as others reach it: ``PUBLIC_URL``, else the HTTP server's own."""
        return self.settings.public_url or f"http://{self.settings.http_host}:{self.http_port}"

    def start_link(self, payload: str) -> str:
        return f"https://t.me/{self.bot_username}?start={payload}"

    @property
    def webhook_secret(self) -> str | None:
        return self.settings.webhook_secret.get_secret_value() if self.settings.webhook_secret else None

    async def start(self) -> None:
        """Migrate the database, learn the bot's username, start the render workers.

        A database or Telegram that can't be reached, or a token Telegram refuses, is a :class:`ConfigError` naming the setting.
        """
        await migrate.upgrade(self.db.engine)
        await self.presence.join()
        try:
            me = await self.bot.me()
        except TelegramNetworkError as exc:
            raise ConfigError(f"optobot: TELEGRAM_API_URL: cannot reach Telegram at {self.settings.telegram_api_url} ({exc.message}); "
                              "check the network and the address") from None
        except TelegramAPIError as exc:
            raise ConfigError(f"optobot: BOT_TOKEN: Telegram refused the token ({exc.message}); copy it again from @BotFather") from None
        self.bot_username = me.username or ""
        # the workers start in the background: the service answers meanwhile, a render waits for its worker
        self._warming = asyncio.ensure_future(self.renderer.warm_up(self.settings.render_warm))
        await self.crm.start()
        if self.role != "worker" and self.settings.public_url:  # a random 256-bit token, masked in the log before it is written
            candidate = secrets.token_urlsafe(32)
            add_secret(candidate)
            async with self.db.begin() as session:
                self.receiver.secret_token = await webhook.secret_token(session, candidate)
            add_secret(self.receiver.secret_token)
        if not self.webhook_secret:
            log.warning("webhooks.off", reason="WEBHOOK_SECRET is not set: the Marquiz and amoCRM webhooks answer 404")
        log.info("app.started", bot=self.bot_username)

    def web_app(self) -> web.Application:
        if self.role == "worker":
            return create_web_app(self.webhook_secret, self.ops.routes)
        routes = [*self.ops.routes, *self.routes]
        if self.settings.public_url:
            routes = [*routes, ("POST", TELEGRAM_WEBHOOK_PATH, telegram_handler(self.inbox, self.bot, self.receiver.secret_token))]
        return create_web_app(self.webhook_secret, routes)

    def background(self) -> list[Worker]:
        """What runs in the background in this role: the heartbeat and the send outbox's resume loop (every role
        sends to buyers), the inbox's take-over unless ``worker``, and the workers unless ``web``."""
        return [self.presence.run, self.sender.resume.run, *([self.inbox.replay.run] if self.role != "worker" else []),
                *(self.workers if self.role != "web" else [])]

    @property
    def telegram_secret_token(self) -> str:
        """The Telegram webhook's secret token (from the database, at :meth:`start`; ``PUBLIC_URL`` set)."""
        return self.receiver.secret_token

    async def serve(self, *, stop: asyncio.Event | None = None) -> None:
        """Run the HTTP server, the receiver of Telegram's updates (polling or registering the webhook when elected;
        not in the ``worker`` role) and the background workers until ``stop``; then stop taking work at once and
        exit within ``STOP_TIMEOUT``."""
        stop = stop or asyncio.Event()
        runner = web.AppRunner(self.web_app())
        await runner.setup()
        site = web.TCPSite(runner, self.settings.http_host, self.settings.http_port)
        await site.start()
        self.http_port = runner.addresses[0][1]
        log.info("http.listening", host=self.settings.http_host, port=self.http_port, role=self.role)
        stop_workers = asyncio.Event()
        self._tasks = [asyncio.create_task(worker(stop_workers)) for worker in self.background()]
        receiving = asyncio.create_task(self.receiver.run(stop)) if self.role != "worker" else None
        try:
            self.ready.set()
            await stop.wait()
        finally:
            await self._stop(stop_workers, receiving)
            await runner.cleanup()

    async def _stop(self, stop_workers: asyncio.Event, receiving: asyncio.Task[None] | None) -> None:
        """Stop taking work (no update fetched, no new round; ``/readyz`` says so), let what is under way finish —
        a broadcast run records its calls and releases its lease as it ends — then cancel what is left."""
        deadline = asyncio.get_running_loop().time() + STOP_TIMEOUT
        self.ops.stopping = True
        stop_workers.set()
        log.info("app.stopping", role=self.role)
        if receiving is not None:
            await receiving  # ends with ``stop``: what polling fetched last is stored (not yet confirmed), the lock released
        try:
            await asyncio.wait_for(self.inbox.idle(), timeout=max(deadline - asyncio.get_running_loop().time(), 0.1))
            await asyncio.wait_for(self.sender.flushed(), timeout=max(deadline - asyncio.get_running_loop().time(), 0.1))
        except TimeoutError:
            log.warning("app.stop_timeout", waiting="updates under way")
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=max(deadline - asyncio.get_running_loop().time(), 0.1))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[App]:
        """Start, serve in the background for the duration of the block, then close (demo, tests, benchmarks)."""
        await self.start()
        stop = asyncio.Event()
        service = asyncio.create_task(self.serve(stop=stop))
        try:
            await asyncio.wait_for(self.ready.wait(), 30)
            yield self
        finally:
            stop.set()
            await service
            await self.close()

    async def close(self) -> None:
        await self.presence.leave()
        if self._warming is not None:
            await asyncio.gather(self._warming, return_exceptions=True)  # a worker that failed to start is retried by its first render
        if self._owns_renderer:
            self.renderer.close()
        await self.bot.session.close()
        await self.crm.close()
        await self.broadcasts.close()
        await self.relay.close()
        self.analytics.close()
        await self.db.close()


@contextlib.asynccontextmanager
async def wired_broadcasts(settings: Settings) -> AsyncIterator[Broadcasts]:
    """The broadcasts of a whole (not serving) app, so every journal subscriber sees what a command does."""
    app = create_app(settings)
    try:
        yield app.broadcasts
    finally:
        await app.close()
