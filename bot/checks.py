"""``optobot check``: validate the configuration and reach every dependency, naming what is wrong."""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy import text

from bot.catalog.products import load_company, load_products
from bot.config import Settings
from bot.db import migrate
from bot.db.session import open_database
from bot.quiz import load_quiz
from bot.telegram import create_bot

Check = Callable[[Settings], Awaitable[str]]


async def database(settings: Settings) -> str:
    db = open_database(settings.database_url)
    try:
        async with db.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        heads = await migrate.current(db.engine)
        return f"{db.engine.dialect.name}, schema at {', '.join(sorted(heads)) or 'nothing (run `optobot db upgrade`)'}"
    finally:
        await db.close()


async def quiz(settings: Settings) -> str:
    questions = load_quiz(settings.quiz_config).questions
    return f"{len(questions)} questions from {settings.quiz_config}"


async def catalogue(settings: Settings) -> str:
    products = load_products(settings.catalog_dir / "products.yaml")
    load_company(settings.catalog_dir / "company.yaml")
    return f"{len(products)} products in {settings.catalog_dir}"


async def telegram(settings: Settings) -> str:
    if settings.bot_token is None:
        return "BOT_TOKEN not set: only `optobot demo` will run"
    bot = create_bot(settings.bot_token.get_secret_value(), settings.telegram_api_url)
    try:
        me = await bot.me()
        return f"@{me.username} via {settings.telegram_api_url}"
    finally:
        await bot.session.close()


async def webhooks(settings: Settings) -> str:
    mode = f"Telegram webhook at {settings.public_url}" if settings.public_url else "Telegram long polling"
    if settings.webhook_secret is None:
        return f"off (WEBHOOK_SECRET is not set: the Marquiz and amoCRM webhooks answer 404); {mode}"
    return f"/webhooks/*/<secret> on {settings.http_host}:{settings.http_port}; {mode}"


CHECKS: dict[str, Check] = {"database": database, "quiz": quiz, "catalogue": catalogue, "telegram": telegram, "webhooks": webhooks}


async def run_checks(settings: Settings) -> int:
    """Run every check; exit code 1 if any failed."""
    failed = 0
    for name, check in CHECKS.items():
        try:
            print(f"ok    {name}: {await check(settings)}")
        except Exception as exc:  # every failure is reported, none stops the others
            failed += 1
            print(f"FAIL  {name}: {type(exc).__name__}: {exc}")
    return 1 if failed else 0
