"""The amoCRM sync, wired from the settings: outbox writer, client, worker, checks, webhook route.

Without ``AMOCRM_BASE_URL`` the writer still queues every operation (so nothing is lost when
amoCRM is configured later) but nothing is sent and no webhook route is served.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import metrics
from bot.config import Settings
from bot.crm import outbox
from bot.crm.channel import channel_client, channel_limiter
from bot.crm.checks import Checks
from bot.crm.client import AmoClient, TokenSource
from bot.crm.compose import Composer
from bot.crm.config import CrmConfig, load_crm_config
from bot.crm.conversation import Conversations, chat_items
from bot.crm.hook import HOOK_PATH, hook_handler
from bot.crm.models import UNFINISHED
from bot.crm.outbox import Clock, OutboxWriter
from bot.crm.state import SyncState
from bot.crm.tokens import OAuthTokens, StaticToken
from bot.crm.webhooks import webhook_handler
from bot.crm.worker import OutboxWorker
from bot.db.base import utcnow
from bot.hours import WorkingHours
from bot.journal import Journal
from bot.loops import Worker
from bot.quiz import Quiz
from bot.ratelimit import RateLimit, rate_limit

if TYPE_CHECKING:  # aiogram (behind these) stays out of the CRM commands: its import takes seconds
    from bot.crm.replies import Replies
    from bot.media import MediaLinks
    from bot.messenger import Messenger
    from bot.web import Handler

log = structlog.get_logger(__name__)

WEBHOOK_PATH = "/webhooks/amocrm/{secret}"
DISCOVERY_TIMEOUT = 15  # seconds the app start waits for amoCRM


def oauth_tokens(settings: Settings, db: async_sessionmaker[AsyncSession], http: httpx.AsyncClient, limiter: RateLimit, clock: Clock) -> OAuthTokens:
    settings.require("AMOCRM_BASE_URL", "AMOCRM_CLIENT_ID", "AMOCRM_CLIENT_SECRET", "AMOCRM_REDIRECT_URI")
    return OAuthTokens(
        db, settings.amocrm_base_url, settings.amocrm_client_id, settings.amocrm_client_secret.get_secret_value(),  # type: ignore[arg-type, union-attr]
        settings.amocrm_redirect_uri, http=http, limiter=limiter, clock=clock,
    )


def amo_client(settings: Settings, db: async_sessionmaker[AsyncSession], http: httpx.AsyncClient, limiter: RateLimit,
               config: CrmConfig, clock: Clock = utcnow) -> AmoClient:
    """The amoCRM client of the settings: the long-lived token, else the OAuth pair kept in the database."""
    tokens: TokenSource = (
        StaticToken(settings.amocrm_access_token.get_secret_value()) if settings.amocrm_access_token
        else oauth_tokens(settings, db, http, limiter, clock)
    )
    return AmoClient(settings.amocrm_base_url or "", tokens, limiter, config.client, http=http)


class CrmSync:
    """``writer`` goes to ``Journal.subscribe``; ``routes`` and ``workers`` to the app; ``start()``/``close()`` around."""

    def __init__(
        self, settings: Settings, db: async_sessionmaker[AsyncSession], journal: Journal, quiz: Quiz, *,
        config: CrmConfig | None = None, clock: Clock = utcnow, transport: httpx.AsyncBaseTransport | None = None,
        media: MediaLinks | None = None, messenger: Messenger | None = None,
    ) -> None:
        self.config = config or load_crm_config(settings.crm_config)
        self.composer = Composer(self.config.language, quiz, ZoneInfo(settings.timezone))
        self.wakeup = asyncio.Event()
        hours = WorkingHours.parse(settings.working_hours, settings.working_days, settings.timezone)
        self.channel = settings.channel  # the conversation as an amoCRM chat (bot/crm/conversation.py)
        self.chat_wakeup = asyncio.Event()
        self.writer = OutboxWriter(self.config, self.composer, clock, self.woken, hours, message_notes=settings.message_notes,
                                   chat=chat_items if self.channel else None)
        self.journal = journal
        self.db = db
        self.clock = clock
        self.workers: list[Worker] = []
        self.conversations: Conversations | None = None  # the amoCRM chat, with the channel on
        self.replies: Replies | None = None
        self.task_type = settings.reminder_task_type  # tasks that remind the buyer (journalled for bot/followups)
        self.enabled = settings.amocrm_base_url is not None
        if not self.enabled:
            return
        base_url = settings.amocrm_base_url
        self.limiter = rate_limit(settings.amocrm_rps, redis_url=settings.redis_url, key=f"optobot:amocrm:rate:{urlsplit(base_url).netloc}")
        self.http = httpx.AsyncClient(timeout=self.config.client.timeout, transport=transport)
        self.client = amo_client(settings, db, self.http, self.limiter, self.config, clock)
        self.state = SyncState(db, self.client, self.config, quiz, clock, on_discovered=self.composer.follow)
        if self.channel:
            self.channel_secret = settings.amocrm_channel_secret.get_secret_value()  # type: ignore[union-attr]
            self.channel_limiter = channel_limiter(settings)
            self.chats_api = channel_client(settings, self.http, self.channel_limiter, self.config.client)
            avatar = (lambda user_id: media.profile_photo(messenger.bot, user_id)) if media and messenger else None
            self.conversations = Conversations(db, self.client, self.chats_api, media, avatar=avatar)
            if messenger is not None:
                from bot.crm.replies import Replies  # noqa: PLC0415  (aiogram: only in the app, where it is loaded)

                self.replies = Replies(db, journal, messenger, self.http, self.chat_wakeup.set, lang=settings.default_language)
                self.workers.append(self.replies.run)
        self.worker = OutboxWorker(db, self.client, self.state, self.config, self.composer, clock, self.wakeup, self.conversations,
                                   self.chat_wakeup)
        self.checks = Checks(db, self.client, self.state, journal, self.config, self.composer, clock, hours, task_type=self.task_type)
        self.workers += [self.worker.run, self.checks.run, *([self.worker.run_chats] if self.channel else [])]

    def wake(self) -> None:
        """Something was queued (after its commit): both rounds look at once."""
        self.woken(False)

    def woken(self, only_chat: bool) -> None:
        """After a commit that queued items: the chat's round looks at once, the REST round unless all were chat items
        (a write transaction fewer per buyer message: on SQLite every other writer waits for it)."""
        self.chat_wakeup.set()
        if not only_chat:
            self.wakeup.set()

    @property
    def routes(self) -> list[tuple[str, str, Handler]]:
        """The inbound amoCRM webhook (only when the sync is on) and the chat channel's hook (when it is on)."""
        if not self.enabled:
            return []
        routes = [("POST", WEBHOOK_PATH, webhook_handler(self.db, self.journal, self.state.known, self.client.base_url, self.task_type))]
        if self.replies is not None:  # signed by amoCRM: no secret in the path
            routes.append(("POST", HOOK_PATH, hook_handler(self.db, self.channel_secret, self.conversations.scope, self.replies.dispatch)))
        return routes

    async def probe(self) -> None:
        """``/metrics``: the outbox's depth and the age of its oldest unfinished operation."""
        async with self.db() as session:
            depth = sum(count for state, count in (await outbox.counts(session)).items() if state in UNFINISHED)
            oldest = await outbox.oldest_pending(session)
        metrics.CRM_OUTBOX_DEPTH.set(depth)
        metrics.CRM_OUTBOX_AGE.set(max(0.0, (self.clock() - oldest).total_seconds()) if oldest else 0)

    async def start(self) -> None:
        """Discover the account; never fails the app (CRM work waits in the outbox meanwhile)."""
        if not self.enabled:
            log.warning("amocrm.disabled", reason="AMOCRM_BASE_URL is not set; CRM operations are queued, not sent")
            return
        try:
            await asyncio.wait_for(self.state.discover(), DISCOVERY_TIMEOUT)
        except TimeoutError:
            log.warning("amocrm.unreachable", note="discovery is retried by the worker; CRM work waits in the outbox")
        except Exception:
            log.exception("amocrm.discovery_failed", note="CRM work waits in the outbox")

    async def close(self) -> None:
        if self.enabled:
            await self.http.aclose()
            await self.limiter.close()
            if self.channel:
                await self.channel_limiter.close()
