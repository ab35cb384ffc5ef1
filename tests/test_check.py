"""``optobot check`` as a user runs it (a subprocess) against the sandboxes: one line per dependency and per file a
setting names, ``OK``/``FAIL``/``SKIP`` with the reason, exit code 1 on any FAIL, never a traceback."""
from __future__ import annotations

import asyncio
import re
import shutil
import sys
from pathlib import Path

import httpx
import pytest

from bot.config import DEFAULT_CATALOG_DIR as CATALOG_DIR
from bot.sandbox.amocrm import AmoSandbox
from bot.sandbox.telegram import TelegramSandbox
from tests.conftest import REDIS_URL, SECRET, TOKEN
from tests.crm_support import amocrm, eventually  # noqa: F401  (fixtures)
from tests.relay_support import OPERATORS, OPERATORS_YAML
from tests.test_cli import environment, free_port

LINE = re.compile(r"^(OK|FAIL|SKIP|WARN) +(\S[^:]*): (\S.*)$")
PUBLIC_URL = "https://bot.example.com"


async def check(tmp_path: Path, **env: str) -> tuple[int, dict[str, tuple[str, str]]]:
    """Run ``optobot check``; its exit code and ``{name: (status, reason)}``, every line checked for the format."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "check", cwd=tmp_path, env=environment(tmp_path, **env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 120)
    text, errors = out.decode(), err.decode()
    assert "Traceback" not in text + errors and not errors.strip(), errors[-3000:]
    lines = {}
    for line in text.splitlines():
        match = LINE.match(line)
        assert match, f"not one line per check: {line!r}"
        lines[match[2]] = (match[1], match[3])
    return process.returncode or 0, lines


async def register_webhook(sandbox: TelegramSandbox, url: str) -> None:
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{sandbox.base_url}/bot{TOKEN}/setWebhook", json={"url": url})
    assert answer.json()["ok"], answer.text


def settings(tmp_path: Path, sandbox: TelegramSandbox, amocrm: AmoSandbox, database_url: str, **extra: str) -> dict[str, str]:  # noqa: F811
    operators = tmp_path / "operators.yaml"
    operators.write_text(OPERATORS_YAML, encoding="utf-8")
    return {"BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": sandbox.base_url, "DATABASE_URL": database_url, "WEBHOOK_SECRET": SECRET,
            "PUBLIC_URL": PUBLIC_URL, "OPERATOR_CHAT_ID": str(OPERATORS), "OPERATORS_CONFIG": str(operators),
            "AMOCRM_BASE_URL": amocrm.base_url, "AMOCRM_ACCESS_TOKEN": amocrm.long_lived_token, **extra}


async def test_a_good_configuration_reaches_every_dependency(tmp_path: Path, sandbox: TelegramSandbox, amocrm: AmoSandbox,  # noqa: F811
                                                            sqlite_url: str) -> None:
    sandbox.add_group(OPERATORS, "Оптовый отдел", forum=True)
    await register_webhook(sandbox, f"{PUBLIC_URL}/webhooks/telegram")

    code, lines = await check(tmp_path, **settings(tmp_path, sandbox, amocrm, sqlite_url))

    assert code == 0, lines
    statuses = {name: status for name, (status, _) in lines.items()}
    assert statuses == {
        "telegram": "OK", "telegram webhook": "OK", "operator group": "OK", "amoCRM": "OK", "amoCRM funnel": "OK",
        "amoCRM chat channel": "SKIP", "amoCRM reminder tasks": "SKIP", "database": "OK", "redis": "SKIP", "webhooks": "OK", "QUIZ_CONFIG": "OK", "CATALOG_DIR": "OK", "quiz → catalogue": "OK",
        "CRM_CONFIG": "OK", "OPERATORS_CONFIG": "OK", "BROADCAST_SEQUENCES": "OK", "BROADCAST_SEGMENTS": "OK", "DATA_DIR": "OK",
    }
    assert "@optobot_sandbox_bot" in lines["telegram"][1]
    assert "Оптовый отдел" in lines["operator group"][1] and "topics on" in lines["operator group"][1]
    assert "stages: 9" in lines["amoCRM funnel"][1] and "loss reason «Дубль»" in lines["amoCRM funnel"][1]
    assert "at the latest migrations" in lines["database"][1]
    assert "REDIS_URL" in lines["redis"][1]


async def test_a_missing_duplicate_loss_reason_is_a_warning_not_a_failure(tmp_path: Path, sandbox: TelegramSandbox,  # noqa: F811
                                                                           amocrm: AmoSandbox, sqlite_url: str) -> None:
    del amocrm.account.loss_reasons[amocrm.account.loss_reason_id("Дубль")]
    _, lines = await check(tmp_path, **settings(tmp_path, sandbox, amocrm, sqlite_url))
    status, reason = lines["amoCRM funnel"]
    assert status == "WARN" and "«Дубль»" in reason and "without a reason" in reason
    assert "stages: 9" in reason


@pytest.mark.redis
async def test_redis_answers_the_ping(tmp_path: Path) -> None:
    code, lines = await check(tmp_path, REDIS_URL=REDIS_URL or "")
    assert lines["redis"][0] == "OK", lines["redis"]


async def test_each_broken_dependency_is_named_with_what_to_do(tmp_path: Path, sandbox: TelegramSandbox, amocrm: AmoSandbox) -> None:  # noqa: F811
    sandbox.add_group(OPERATORS, "Оптовый отдел", forum=True, bot_admin=False)
    await register_webhook(sandbox, "https://old.example.com/webhooks/telegram")
    fresh = f"sqlite+aiosqlite:///{tmp_path / 'never-migrated.sqlite3'}"

    code, lines = await check(tmp_path, **settings(tmp_path, sandbox, amocrm, fresh, AMOCRM_ACCESS_TOKEN="not-the-token",
                                                   REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"))

    assert code == 1
    failed = {name: reason for name, (status, reason) in lines.items() if status == "FAIL"}
    assert set(failed) == {"amoCRM", "operator group", "database", "redis", "telegram webhook"}, lines
    assert "AMOCRM_ACCESS_TOKEN" in failed["amoCRM"] and lines["amoCRM funnel"][0] == "SKIP"
    assert "not an administrator" in failed["operator group"]
    assert "optobot db upgrade" in failed["database"]
    assert "cannot connect" in failed["redis"] and "REDIS_URL" in failed["redis"]
    assert "https://old.example.com/webhooks/telegram" in failed["telegram webhook"] and PUBLIC_URL in failed["telegram webhook"]
    assert "not-the-token" not in str(lines)


async def test_what_amocrm_lacks_topics_off_a_failing_webhook_and_a_broken_file(tmp_path: Path, sandbox: TelegramSandbox,  # noqa: F811
                                                                              amocrm: AmoSandbox, sqlite_url: str) -> None:
    sandbox.add_group(OPERATORS, "Оптовый отдел", forum=False)
    city = amocrm.account.field_by_name("leads", "Город")["id"]
    del amocrm.account.fields["leads"][city]
    nowhere = f"http://127.0.0.1:{free_port()}"
    await register_webhook(sandbox, f"{nowhere}/webhooks/telegram")
    sandbox.add_user(4242, "Анна")
    sandbox.send_text(4242, "/start")  # Telegram tries to deliver it and fails

    async def failed_delivery() -> bool:
        async with httpx.AsyncClient() as client:
            return "last_error_date" in (await client.get(f"{sandbox.base_url}/bot{TOKEN}/getWebhookInfo")).json()["result"]

    await eventually(failed_delivery, timeout=15)
    sequences = tmp_path / "sequences.yaml"
    sequences.write_text("sequences:\n  - {key: broken, name: x, entry: {event: catalog_sent}, steps: "
                         "[{key: s1, delay: 1d, message: {text: '{{ frist_name }}'}}]}\n", encoding="utf-8")

    catalog = Path(shutil.copytree(CATALOG_DIR, tmp_path / "catalog"))  # the mapping forgets the quiz's «Обувь»
    mapping = catalog / "mapping.yaml"
    mapping.write_text(mapping.read_text(encoding="utf-8").replace("  shoes: shoes\n", ""), encoding="utf-8")

    code, lines = await check(tmp_path, **settings(tmp_path, sandbox, amocrm, sqlite_url, PUBLIC_URL=nowhere, CATALOG_DIR=str(catalog),
                                                   BROADCAST_SEQUENCES=str(sequences), BROADCAST_SEGMENTS="missing/segments.yaml"))

    assert code == 1
    assert lines["amoCRM"][0] == "OK"
    assert lines["amoCRM funnel"][0] == "FAIL" and "lead field «Город» (city) not found" in lines["amoCRM funnel"][1]
    assert lines["operator group"][0] == "FAIL" and "topics are off" in lines["operator group"][1]
    assert lines["telegram webhook"][0] == "FAIL" and "could not deliver" in lines["telegram webhook"][1]
    assert lines["BROADCAST_SEQUENCES"][0] == "FAIL" and "frist_name" in lines["BROADCAST_SEQUENCES"][1]
    assert lines["BROADCAST_SEGMENTS"][0] == "FAIL" and "no such file" in lines["BROADCAST_SEGMENTS"][1]
    assert lines["CATALOG_DIR"][0] == "OK" and lines["quiz → catalogue"][0] == "FAIL"
    assert "quiz category option 'shoes' maps to nothing" in lines["quiz → catalogue"][1]
    assert "category 'shoes' (Обувь) is reached by no quiz option" in lines["quiz → catalogue"][1]


async def test_without_amocrm_or_a_token_the_dependencies_they_need_are_skipped_with_why(tmp_path: Path, sqlite_url: str) -> None:
    code, lines = await check(tmp_path, DATABASE_URL=sqlite_url)
    assert code == 0
    for name, setting in (("telegram", "BOT_TOKEN"), ("telegram webhook", "PUBLIC_URL"), ("operator group", "OPERATOR_CHAT_ID"),
                          ("amoCRM", "AMOCRM_BASE_URL"), ("amoCRM funnel", "AMOCRM_BASE_URL"),
                          ("amoCRM chat channel", "AMOCRM_BASE_URL"), ("amoCRM reminder tasks", "AMOCRM_BASE_URL")):
        assert lines[name][0] == "SKIP" and setting in lines[name][1], (name, lines[name])


async def test_the_chat_channel_is_reported_connected_or_what_to_run(tmp_path: Path, amocrm: AmoSandbox, sqlite_url: str) -> None:  # noqa: F811
    registered = amocrm.chats.register_channel("https://bot.example.com/webhooks/amojo/:scope_id")
    env = {"DATABASE_URL": sqlite_url, "AMOCRM_BASE_URL": amocrm.base_url, "AMOCRM_ACCESS_TOKEN": amocrm.long_lived_token,
           "AMOCRM_CHANNEL_ID": registered.id, "AMOCRM_CHANNEL_SECRET": registered.secret, "AMOJO_BASE_URL": amocrm.base_url}
    code, lines = await check(tmp_path, **env)
    assert code == 1 and lines["amoCRM chat channel"][0] == "FAIL" and "optobot amocrm connect-channel" in lines["amoCRM chat channel"][1]

    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "amocrm", "connect-channel", cwd=tmp_path,
                                                   env=environment(tmp_path, **env), stdout=asyncio.subprocess.PIPE)
    await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0
    code, lines = await check(tmp_path, **env)
    assert lines["amoCRM chat channel"][0] == "OK" and "message notes off" in lines["amoCRM chat channel"][1], lines
    assert registered.secret not in str(lines)


async def test_the_reminder_task_type_is_checked_against_the_account(tmp_path: Path, amocrm: AmoSandbox, sqlite_url: str) -> None:  # noqa: F811
    kind = amocrm.account.add_task_type("Напомнить клиенту")
    env = {"DATABASE_URL": sqlite_url, "AMOCRM_BASE_URL": amocrm.base_url, "AMOCRM_ACCESS_TOKEN": amocrm.long_lived_token}
    code, lines = await check(tmp_path, **env, REMINDER_TASK_TYPE="77")
    assert code == 1 and lines["amoCRM reminder tasks"] == (
        "FAIL", f"REMINDER_TASK_TYPE=77 is not a task type of the account; its types: 1 «Связаться», 2 «Встреча», {kind} «Напомнить клиенту»")
    code, lines = await check(tmp_path, **env, REMINDER_TASK_TYPE=str(kind))
    assert lines["amoCRM reminder tasks"] == ("OK", f"tasks of type «Напомнить клиенту» (#{kind}) on a buyer's deal remind the buyer")
