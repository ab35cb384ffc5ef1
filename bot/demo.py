"""``optobot demo``: the whole journey against the built-in sandbox, with a scripted buyer.

Starts the sandbox Bot API in-process, runs the real service against it, then plays a buyer:
website quiz (Marquiz webhook) → ``/start`` deep link → catalogue → test batch. Prints the
transcript with the measured greeting and catalogue times and writes the PDF to ``./demo-output/``.
"""
from __future__ import annotations

import json
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from bot.app import App
from bot.config import Settings
from bot.crm import channel
from bot.db import leads
from bot.sandbox.amocrm import AmoSandbox, start_sandbox_amocrm
from bot.sandbox.telegram import TelegramSandbox

DEMO_TOKEN = "777000:DEMO-sandbox"
BUYER_ID = 90001
OUTPUT = Path("demo-output")
QUIZ = {
    "contacts": {"name": "Анна Петрова", "phone": "79991234567", "email": "anna@boutique.example"},
    "quiz": {"id": "65a1b2c3d4e5f60718293a4b", "name": "Подбор оптовой партии"},
    "answers": [
        {"q": "Какая категория товаров вас интересует?", "a": ["Обувь", "Аксессуары"]},
        {"q": "Какой объём закупки планируете?", "a": "100–300 тыс ₽"},
        {"q": "Где вы продаёте?", "a": "Маркетплейсы"},
        {"q": "Ваш город доставки?", "a": "Казань"},
    ],
    "extra": {"utm": {"source": "yandex", "medium": "cpc", "name": "opt_obuv"}, "href": "https://opt.example/quiz"},
    "created": "2026-11-26T10:00:00.000Z",
}


class Transcript:
    def __init__(self, sandbox: TelegramSandbox) -> None:
        self.sandbox = sandbox
        self.shown = 0

    def buyer(self, text: str) -> None:
        print(f"\n👤 Анна: {text}")

    async def bot(self, count: int, since: float) -> list[dict[str, Any]]:
        """Wait for ``count`` bot messages, print them with the time since ``since``; return them."""
        messages = await self.sandbox.wait_for_messages(BUYER_ID, self.shown + count, timeout=60)
        new = messages[self.shown:self.shown + count]
        self.shown += count
        for message in new:
            call = next(c for c in self.sandbox.calls
                        if isinstance(c.result, dict) and c.result.get("message_id") == message["message_id"] and str(c.chat_id) == str(BUYER_ID))
            elapsed = (call.started_at - since) * 1000
            body = message.get("text") or f"[{message['document']['file_name']}, {message['document']['file_size'] // 1024} KB] {message.get('caption', '')}"
            print(f"🤖 bot (+{elapsed:.0f} ms): " + body.replace("\n", "\n   "))
            labels = [b["text"] for row in (message.get("reply_markup") or {}).get("inline_keyboard", []) for b in row]
            if labels:
                print("   " + "  ".join(f"[{label}]" for label in labels))
        return new

    def click(self, label: str) -> None:
        for message in reversed(self.sandbox.messages(BUYER_ID, from_bot=True)):
            for row in (message.get("reply_markup") or {}).get("inline_keyboard", []):
                for button in row:
                    if label in button["text"]:
                        print(f"\n👤 Анна taps [{button['text']}]")
                        self.sandbox.click(BUYER_ID, message, button["callback_data"])
                        return
        raise RuntimeError(f"no button {label!r}")


async def run_demo(settings: Settings) -> int:
    OUTPUT.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="optobot-demo-"))
    amocrm, amocrm_url, amocrm_token = await start_sandbox_amocrm()
    registered = amocrm.chats.register_channel("http://127.0.0.1:9/webhooks/amojo/:scope_id")  # as amoCRM's support would
    try:
        async with TelegramSandbox(token=DEMO_TOKEN, bot_username="optobot_demo_bot") as sandbox:
            demo = settings.model_copy(update={
                "bot_token": SecretStr(DEMO_TOKEN), "telegram_api_url": sandbox.base_url,
                "database_url": f"sqlite+aiosqlite:///{workdir / 'demo.sqlite3'}", "data_dir": workdir,
                "webhook_secret": SecretStr(secrets.token_urlsafe(24)), "http_port": 0, "public_url": None,
                "amocrm_base_url": amocrm_url, "amocrm_access_token": SecretStr(amocrm_token),
                "amocrm_channel_id": registered.id, "amocrm_channel_secret": SecretStr(registered.secret), "amojo_base_url": amocrm_url,
                "catalog_prerender": False,  # one buyer: their body is drawn on their tap
            })
            sandbox.add_user(BUYER_ID, "Анна", "Петрова", "anna_boutique")
            started = time.perf_counter()
            async with App(demo).running() as app:
                registered.hook_url = f"http://127.0.0.1:{app.http_port}/webhooks/amojo/:scope_id"
                await channel.connect(app.db, app.crm.client, app.crm.chats_api, "Telegram")
                print(f"optobot demo — sandbox Telegram at {sandbox.base_url}, sandbox amoCRM at {amocrm_url}; "
                      f"service ready in {time.perf_counter() - started:.1f} s")
                code = await _play(app, sandbox)
                await _show_crm(app, amocrm)
                return code
    finally:
        await amocrm.close()


async def _show_crm(app: App, amocrm: AmoSandbox) -> None:
    """Let the outbox drain, then print the lead as amoCRM holds it."""
    await app.inbox.idle()
    await app.crm.worker.drain()
    async with app.db() as session:
        lead = await leads.by_tg_user(session, BUYER_ID)
    print("\n— In amoCRM (sandbox) —")
    print(amocrm.describe_lead(lead.crm_lead_id) if lead and lead.crm_lead_id else "(the lead has not reached amoCRM yet)")
    print("\n— The conversation as amoCRM's chat on the lead holds it —")
    print("\n".join(amocrm.chats.transcript(f"tg-{BUYER_ID}")) or "(not in the chat yet)")


async def _play(app: App, sandbox: TelegramSandbox) -> int:
    chat = Transcript(sandbox)
    print("\n🌐 The buyer finishes the quiz on the website; Marquiz calls the webhook:")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as client:
        response = await client.post(f"/webhooks/marquiz/{app.webhook_secret}", content=json.dumps(QUIZ, ensure_ascii=False),
                                     headers={"Content-Type": "application/json"})
    answer = response.json()
    print(f"   POST /webhooks/marquiz/<secret> → {response.status_code} {answer}")
    payload = answer["start_link"].split("start=", 1)[1]

    chat.buyer(f"/start {payload}   (the thank-you page opened the bot)")
    since = time.perf_counter()
    sandbox.send_text(BUYER_ID, f"/start {payload}")
    await chat.bot(1, since)
    greeting_ms = (await sandbox.wait_for_call("sendMessage", since=since)).started_at - since

    chat.click("каталог")
    since = time.perf_counter()
    await chat.bot(3, since)  # the PDF, the Excel price list, the test-batch offer
    document = next(m for m in sandbox.messages(BUYER_ID, from_bot=True) if "document" in m)
    catalogue_s = (await sandbox.wait_for_call("sendDocument", since=since)).finished_at - since
    pdf = OUTPUT / "catalog.pdf"
    pdf.write_bytes(sandbox.files[document["document"]["file_id"]])

    chat.click("тестовую партию")
    await chat.bot(1, time.perf_counter())
    for text in ("Кроссовки SH-101 и ремни AC-305, размеры 36–41, по 10 пар",):
        chat.buyer(text)
        since = time.perf_counter()
        sandbox.send_text(BUYER_ID, text)
        await chat.bot(1, since)

    print("\n— Measured —")
    print(f"greeting: {greeting_ms * 1000:.0f} ms from /start to sendMessage")
    print(f"catalogue: {catalogue_s:.2f} s from the tap to the PDF delivered (cold render)")
    print(f"PDF written to {pdf.resolve()}")
    return 0
