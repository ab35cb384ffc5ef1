"""One ``Settings`` object, read from environment variables and ``.env``."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from bot.hours import parse_days, parse_hours

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
#: The sample suppliers (``samples/<name>/``: catalogue, mapping, quiz, company); the clothing one is the default.
SAMPLES_DIR = PROJECT_DIR / "samples"
DEFAULT_CATALOG_DIR = SAMPLES_DIR / "clothing"
DEFAULT_QUIZ = DEFAULT_CATALOG_DIR / "quiz.yaml"


def refresh_seconds(value: str) -> int:
    """``off`` → 0; ``30m``, ``1h``, ``1d`` → seconds (at least 5 minutes)."""
    text = value.strip().lower()
    if text in ("off", "", "0"):
        return 0
    match = re.fullmatch(r"(\d+)\s*([mhd])", text)
    seconds = int(match[1]) * {"m": 60, "h": 3600, "d": 86400}[match[2]] if match else 0
    if seconds < 300:
        raise ValueError("expected off or a period of at least 5 minutes such as 30m, 1h, 1d")
    return seconds


class ConfigError(SystemExit):
    """Raised at start when the configuration is missing or wrong; names every problem."""


class Settings(BaseSettings):
    """The service configuration. Variable names are a public contract."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    bot_token: SecretStr | None = Field(default=None, alias="BOT_TOKEN")
    telegram_api_url: str = Field(default="https://api.telegram.org", alias="TELEGRAM_API_URL")
    database_url: str = Field(default="sqlite+aiosqlite:///./data/optobot.sqlite3", alias="DATABASE_URL")
    http_host: str = Field(default="127.0.0.1", alias="HTTP_HOST")
    http_port: int = Field(default=8080, ge=0, le=65535, alias="HTTP_PORT")
    webhook_secret: SecretStr | None = Field(default=None, alias="WEBHOOK_SECRET")
    public_url: str | None = Field(default=None, alias="PUBLIC_URL")
    operator_chat_id: int | None = Field(default=None, alias="OPERATOR_CHAT_ID")
    operator_chat_ids: Annotated[tuple[int, ...], NoDecode] = Field(default=(), alias="OPERATOR_CHAT_IDS")  # several groups
    admin_ids: Annotated[frozenset[int], NoDecode] = Field(default=frozenset(), alias="ADMIN_IDS")
    catalog_dir: Path = Field(default=DEFAULT_CATALOG_DIR, alias="CATALOG_DIR")
    quiz_config: Path = Field(default=DEFAULT_QUIZ, alias="QUIZ_CONFIG")
    default_language: str = Field(default="ru", pattern="^(ru|en)$", alias="DEFAULT_LANGUAGE")

    data_dir: Path = Field(default=Path("./data"), alias="DATA_DIR")
    redis_url: str | None = Field(default=None, alias="REDIS_URL")
    render_workers: int = Field(default=2, ge=1, le=32, alias="RENDER_WORKERS")
    render_warm: int = Field(default=1, ge=0, le=32, alias="RENDER_WARM")
    catalog_prerender: bool = Field(default=True, alias="CATALOG_PRERENDER")
    start_token_ttl_days: int = Field(default=30, ge=1, alias="START_TOKEN_TTL_DAYS")
    send_retry_for: float = Field(default=600, gt=0, le=86400, alias="SEND_RETRY_FOR")
    inbox_handling_at_once: int = Field(default=64, ge=1, le=10000, alias="INBOX_HANDLING_AT_ONCE")
    timezone: str = Field(default="Europe/Moscow", alias="TIMEZONE")
    log_level: str = Field(default="INFO", alias="LOG_LEVEL")
    log_format: str = Field(default="text", pattern="^(text|json)$", alias="LOG_FORMAT")

    amocrm_base_url: str | None = Field(default=None, alias="AMOCRM_BASE_URL")
    amocrm_access_token: SecretStr | None = Field(default=None, alias="AMOCRM_ACCESS_TOKEN")
    amocrm_client_id: str | None = Field(default=None, alias="AMOCRM_CLIENT_ID")
    amocrm_client_secret: SecretStr | None = Field(default=None, alias="AMOCRM_CLIENT_SECRET")
    amocrm_redirect_uri: str | None = Field(default=None, alias="AMOCRM_REDIRECT_URI")
    amocrm_rps: int = Field(default=6, ge=1, le=50, alias="AMOCRM_RPS")
    crm_config: Path = Field(default=PACKAGE_DIR / "crm" / "crm.yaml", alias="CRM_CONFIG")
    # amoCRM Chats API channel (bot/crm/README.md, "The conversation as an amoCRM chat")
    amocrm_channel_id: str | None = Field(default=None, alias="AMOCRM_CHANNEL_ID")
    amocrm_channel_secret: SecretStr | None = Field(default=None, alias="AMOCRM_CHANNEL_SECRET")
    amocrm_channel_code: str | None = Field(default=None, alias="AMOCRM_CHANNEL_CODE")
    amojo_base_url: str = Field(default="https://amojo.amocrm.ru", alias="AMOJO_BASE_URL")
    amocrm_message_notes: bool | None = Field(default=None, alias="AMOCRM_MESSAGE_NOTES")  # None: off when the channel is on

    # Operator chat (bot/relay/): managers and templates, topic on /start or on the first question, answer SLA
    operators_config: Path = Field(default=PACKAGE_DIR / "relay" / "operators.yaml", alias="OPERATORS_CONFIG")
    topic_on_arrival: bool = Field(default=False, alias="TOPIC_ON_ARRIVAL")
    sla_minutes: int = Field(default=5, ge=1, alias="SLA_MINUTES")  # working minutes to the first ping
    sla_escalate_minutes: int = Field(default=15, ge=1, alias="SLA_ESCALATE_MINUTES")  # … to the head of sales
    working_hours: str = Field(default="09:00-19:00", alias="WORKING_HOURS")  # in TIMEZONE
    working_days: str = Field(default="1-5", alias="WORKING_DAYS")  # ISO weekdays, 1 = Monday
    group_posts_per_minute: int = Field(default=20, ge=1, le=100_000, alias="GROUP_POSTS_PER_MINUTE")  # the bot's posts per operator group
    group_topics_per_minute: int = Field(default=20, ge=1, le=100_000, alias="GROUP_TOPICS_PER_MINUTE")  # topics created per group

    # Broadcasts and warm-up sequences (broadcasts/)
    broadcast_rate: float = Field(default=25, gt=0, le=30, alias="BROADCAST_RATE")  # messages/s, all broadcasts together
    broadcast_paid: float = Field(default=0, ge=0, le=1000, alias="BROADCAST_PAID")  # paid broadcasts: off (0/false), on (true = 1000/s) or a rate
    broadcast_max_errors: int = Field(default=20, ge=0, alias="BROADCAST_MAX_ERRORS")  # consecutive errors that pause a broadcast (0 = never)
    broadcast_max_attempts: int = Field(default=3, ge=1, le=10, alias="BROADCAST_MAX_ATTEMPTS")  # tries on a transient error
    quiet_hours: str | None = Field(default="21:00-09:00", pattern=r"^(\d{1,2}:\d{2}-\d{1,2}:\d{2})?$", alias="QUIET_HOURS")  # "" = none
    broadcast_sequences: Path = Field(default=PROJECT_DIR / "broadcasts" / "sequences.yaml", alias="BROADCAST_SEQUENCES")
    broadcast_segments: Path = Field(default=PROJECT_DIR / "broadcasts" / "segments.yaml", alias="BROADCAST_SEGMENTS")

    # The catalogue (bot/catalog/): the feed or price list refreshed on a schedule ("off" = never), the PDF's size
    catalog_source: str | None = Field(default=None, alias="CATALOG_SOURCE")  # an http(s) URL or a file
    catalog_refresh: str = Field(default="off", alias="CATALOG_REFRESH")  # off | 30m | 1h | 1d …
    catalog_max_per_category: int = Field(default=40, ge=1, le=1000, alias="CATALOG_MAX_PER_CATEGORY")

    # Follow-ups (bot/followups/, docs/followups.md): the stage messages file
    stage_messages: Path = Field(default=PACKAGE_DIR / "followups" / "stage_messages.yaml", alias="STAGE_MESSAGES")
    feedback_survey_days: float = Field(default=3, gt=0, le=90, alias="FEEDBACK_SURVEY_DAYS")  # after «Тестовая партия получена»
    main_batch_nudge_days: float = Field(default=7, gt=0, le=90, alias="MAIN_BATCH_NUDGE_DAYS")  # after a rating of 4–5
    # the reorder offer: the rhythm assumed after a first shipped order, how many days before the expected reorder it
    # goes, how long «Пока не нужно» puts it off
    reorder_default_days: float = Field(default=30, gt=0, le=365, alias="REORDER_DEFAULT_DAYS")
    reorder_notice_days: float = Field(default=3, ge=0, le=60, alias="REORDER_NOTICE_DAYS")
    reorder_snooze_days: float = Field(default=14, gt=0, le=365, alias="REORDER_SNOOZE_DAYS")
    # an amoCRM task of this type (task_type_id) on the buyer's deal reminds the buyer at its deadline; unset = off
    reminder_task_type: int | None = Field(default=None, gt=0, alias="REMINDER_TASK_TYPE")

    # Sales analytics (bot/analytics/): the weekly digest, in TIMEZONE ("off" = none); where it goes (default: each admin)
    report_schedule: str = Field(default="mon 09:00", alias="REPORT_SCHEDULE")
    report_chat_id: int | None = Field(default=None, alias="REPORT_CHAT_ID")

    @field_validator("admin_ids", "operator_chat_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str):
            parts = [part.strip() for part in value.replace(";", ",").split(",")]
            try:
                return tuple(int(part) for part in parts if part)
            except ValueError as exc:
                example = "-1001234567890,-1009876543210" if info.field_name == "operator_chat_ids" else "111,222"
                raise ValueError(f"must be comma-separated Telegram ids, e.g. {example}") from exc
        return value

    @field_validator("broadcast_paid", mode="before")
    @classmethod
    def _paid(cls, value: object) -> object:
        """``true``/``on`` means Telegram's paid ceiling (1000/s); ``false``/``off``/empty means off."""
        if isinstance(value, bool):
            return 1000 if value else 0
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "false", "no", "off", ""):
            return 1000 if value.strip().lower() in ("true", "yes", "on") else 0
        return value

    @field_validator("telegram_api_url", "public_url", "amocrm_base_url", "amojo_base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError:
            url = None
        if url is None or url.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
            raise ValueError("expected sqlite+aiosqlite:///path/to/file.sqlite3 or postgresql+asyncpg://user:password@host/database")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected redis://host:6379/0 (or rediss://, unix://)")
        return value or None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone; expected an IANA name such as Europe/Moscow or Asia/Novosibirsk") from None
        return value

    @field_validator("quiz_config", "crm_config", "operators_config", "catalog_dir", "stage_messages")
    @classmethod
    def _exists(cls, value: Path, info: ValidationInfo) -> Path:
        folder = info.field_name == "catalog_dir"
        if not (value.is_dir() if folder else value.is_file()):
            raise ValueError(f"no such {'folder' if folder else 'file'} (a relative path starts in {Path.cwd()})")
        return value

    @field_validator("catalog_refresh")
    @classmethod
    def _refresh(cls, value: str) -> str:
        refresh_seconds(value)
        return value

    @model_validator(mode="after")
    def _refresh_source(self) -> Settings:
        if refresh_seconds(self.catalog_refresh) and not self.catalog_source:
            raise ValueError("CATALOG_REFRESH needs CATALOG_SOURCE: the feed's URL (or file) to refresh from")
        return self

    @field_validator("working_hours")
    @classmethod
    def _hours(cls, value: str) -> str:
        parse_hours(value)
        return value

    @field_validator("working_days")
    @classmethod
    def _days(cls, value: str) -> str:
        parse_days(value)
        return value

    @model_validator(mode="after")
    def _escalation(self) -> Settings:
        if self.sla_escalate_minutes <= self.sla_minutes:
            raise ValueError("SLA_ESCALATE_MINUTES must be greater than SLA_MINUTES")
        return self

    @field_validator("report_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        value = " ".join(value.split()).lower()
        if value not in ("", "off") and not re.match(r"^(mon|tue|wed|thu|fri|sat|sun) ([01]?\d|2[0-3]):[0-5]\d$", value):
            raise ValueError("must be a weekday and a time in TIMEZONE, like 'mon 09:00', or 'off'")
        return "off" if value == "" else value

    @field_validator("webhook_secret")
    @classmethod
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (it is the only guard of the webhook URLs)")
        return value

    def secrets(self) -> list[str]:
        """Every secret value in the settings (the log masks them)."""
        values = (self.bot_token, self.webhook_secret, self.amocrm_access_token, self.amocrm_client_secret, self.amocrm_channel_secret)
        return [value.get_secret_value() for value in values if value is not None and value.get_secret_value()]

    @property
    def operator_chats(self) -> tuple[int, ...]:
        """Every operator group: OPERATOR_CHAT_ID (if set) and OPERATOR_CHAT_IDS, in that order, each once."""
        first = (self.operator_chat_id,) if self.operator_chat_id is not None else ()
        return tuple(dict.fromkeys(first + self.operator_chat_ids))

    @property
    def channel(self) -> bool:
        """The amoCRM chat channel is on: its id and secret are set (and amoCRM itself)."""
        return bool(self.amocrm_base_url and self.amocrm_channel_id and self.amocrm_channel_secret)

    @property
    def message_notes(self) -> bool:
        """Every message a note on the lead: by default only while the conversation is not an amoCRM chat."""
        return not self.channel if self.amocrm_message_notes is None else self.amocrm_message_notes

    @property
    def sandbox(self) -> bool:
        """No token: run against the built-in sandbox."""
        return self.bot_token is None

    def require(self, *names: str) -> None:
        """Fail with one clear message if any of the named settings is unset."""
        missing = [name for name in names if getattr(self, name.lower()) in (None, "", frozenset())]
        if missing:
            raise ConfigError("optobot: missing configuration: " + ", ".join(missing) + " (set them in the environment or .env)")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (drivers add background and hints below it)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def shown(name: str, value: object) -> str:
    """A setting's value as it may be printed: secrets left out, passwords in URLs masked."""
    if "SECRET" in name or "TOKEN" in name:
        return ""
    masked = _PASSWORD.sub(r"\1***@", str(value))
    return f" (got {masked!r})"


def load_settings(**overrides: object) -> Settings:
    """Read and validate the settings, turning validation errors into one line per setting."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            if error["loc"]:
                name = str(error["loc"][0])
                lines.append(f"optobot: {name}: {message}{shown(name, error['input'])}")
            else:
                lines.append(f"optobot: {message}")
        raise ConfigError("\n".join(lines)) from None
