"""``optobot`` as a user runs it (a subprocess): wrong settings and unreachable dependencies end in one or two lines
naming the setting, the value and what is expected (exit code 2, no traceback), an unexpected failure in one line
(exit code 1); the service starts without WEBHOOK_SECRET (webhooks off); secrets never reach the log."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from bot.cli import main
from bot.config import PROJECT_DIR, Settings
from bot.logs import mask
from bot.media import MediaLinks
from bot.sandbox.amocrm import AmoSandbox
from bot.sandbox.balancer import free_port
from bot.sandbox.telegram import TelegramSandbox
from tests.buyer import Buyer
from tests.conftest import SECRET, TOKEN
from tests.crm_support import eventually

PASSED_ON = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH")


def environment(tmp_path: Path, **values: str) -> dict[str, str]:
    """A clean environment (nothing of the developer's settings), working in ``tmp_path`` (no stray .env)."""
    return {**{k: os.environ[k] for k in PASSED_ON if k in os.environ}, "DATA_DIR": str(tmp_path / "data"), "RENDER_WORKERS": "1",
            "CATALOG_PRERENDER": "false", **values}


def optobot(tmp_path: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``optobot ARGV`` in a subprocess with the settings ``env`` and nothing else."""
    return subprocess.run([sys.executable, "-m", "bot", *argv], env=environment(tmp_path, **env), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # noqa: ANN201
    """``optobot ARGV`` in this process (``bot.cli.main``) with the settings ``env`` and nothing else: a finished process."""
    def call(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
        for field in Settings.model_fields.values():
            monkeypatch.delenv(field.alias, raising=False)
        for name, value in environment(tmp_path, **env).items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path)
        with pytest.raises(SystemExit) as exit_:
            main(list(argv))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(argv, exit_.value.code, out, err)
    return call


def assert_short_failure(result: subprocess.CompletedProcess[str], *names: str) -> None:
    """Exit code 2, at most two lines on stderr, each of ``names`` in them, no traceback anywhere."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert 1 <= len(lines) <= 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    for name in names:
        assert name in result.stderr, (name, result.stderr)


@pytest.mark.parametrize(("setting", "value", "expected"), [
    ("DATABASE_URL", "garbage", "sqlite+aiosqlite://"),
    ("DATABASE_URL", "postgresql://user:pa55word@db/optobot", "postgresql+asyncpg://"),
    ("TIMEZONE", "Mars/Base", "Europe/Moscow"),
    ("OPERATORS_CONFIG", "missing/operators.yaml", "no such file"),
    ("QUIZ_CONFIG", "missing/quiz.yaml", "no such file"),
    ("CRM_CONFIG", "missing/crm.yaml", "no such file"),
    ("CATALOG_DIR", "missing-catalogue", "no such folder"),
    ("CATALOG_REFRESH", "1m", "at least 5 minutes"),
    ("CATALOG_REFRESH", "1h", "needs CATALOG_SOURCE"),
    ("REDIS_URL", "localhost:6379", "redis://"),
    ("WEBHOOK_SECRET", "short-pa55word", "at least 16 characters"),
])
def test_a_wrong_setting_is_named_in_one_line(cli, setting: str, value: str, expected: str) -> None:
    result = cli("run", BOT_TOKEN=TOKEN, **{setting: value})
    assert_short_failure(result, setting, expected)
    assert "pa55word" not in result.stderr
    if "/" in value and "://" not in value:
        assert value in result.stderr


def test_a_broken_settings_file_is_named_in_one_line(cli, tmp_path: Path) -> None:
    (tmp_path / "operators.yaml").write_text("operators: [{name: Ann}]\n", encoding="utf-8")
    result = cli("run", BOT_TOKEN=TOKEN, OPERATORS_CONFIG="operators.yaml")
    assert_short_failure(result, "operators.yaml")


@pytest.mark.parametrize("argv", [["run"], ["broadcast", "status"], ["crm", "status"], ["db", "upgrade"]])
def test_an_unreachable_database(cli, argv: list[str]) -> None:
    url = f"postgresql+asyncpg://optobot:pa55word@127.0.0.1:{free_port()}/optobot"
    result = cli(*argv, BOT_TOKEN=TOKEN, DATABASE_URL=url)
    assert_short_failure(result, "DATABASE_URL", "cannot connect")
    assert "pa55word" not in result.stderr


def test_an_unexpected_failure_is_one_line_with_exit_code_1(tmp_path: Path, sqlite_url: str) -> None:
    """A damaged database (a table gone behind the migrations' back) fails ``crm status`` unexpectedly: one line naming
    the command and the error, exit code 1; the traceback only in the log at ``LOG_LEVEL=DEBUG``."""
    database = sqlite3.connect(make_url(sqlite_url).database)
    database.execute("DROP TABLE crm_outbox")
    database.close()
    result = optobot(tmp_path, "crm", "status", DATABASE_URL=sqlite_url, PYTHONPATH=str(PROJECT_DIR))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr + result.stdout and "no such table: crm_outbox" in lines[0]
    assert lines[0].startswith("optobot: status failed:") and "LOG_LEVEL=DEBUG" in lines[0]

    debug = optobot(tmp_path, "crm", "status", DATABASE_URL=sqlite_url, LOG_LEVEL="DEBUG", PYTHONPATH=str(PROJECT_DIR))
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr and "command.failed" in debug.stderr


def test_unreachable_telegram_at_start(cli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert_short_failure(cli("run", BOT_TOKEN=TOKEN, TELEGRAM_API_URL=url), "TELEGRAM_API_URL", url)


async def test_a_token_telegram_refuses(tmp_path: Path, sandbox: TelegramSandbox) -> None:
    result = await asyncio.to_thread(optobot, tmp_path, "run", BOT_TOKEN="999:not-this-bot", TELEGRAM_API_URL=sandbox.base_url)
    assert_short_failure(result, "BOT_TOKEN")
    assert "not-this-bot" not in result.stderr


@pytest.fixture
def without_pango(tmp_path: Path) -> str:
    """A PYTHONPATH on which WeasyPrint fails to load Pango as it does on a machine without it."""
    stub = tmp_path / "no-pango" / "weasyprint"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text(
        'raise OSError("cannot load library \'libpango-1.0-0\': libpango-1.0-0: cannot open shared object file")\n', encoding="utf-8")
    return str(stub.parent)


def test_help_does_not_need_weasyprint(tmp_path: Path, without_pango: str) -> None:
    result = optobot(tmp_path, "--help", PYTHONPATH=without_pango)  # every command's module is imported for the help
    assert result.returncode == 0 and "usage: optobot" in result.stdout and not result.stderr, result.stderr


@pytest.mark.parametrize("command", ["run", "demo"])
def test_rendering_without_pango_names_the_packages(tmp_path: Path, without_pango: str, command: str) -> None:
    env = {"BOT_TOKEN": TOKEN} if command == "run" else {}
    assert_short_failure(optobot(tmp_path, command, PYTHONPATH=without_pango, **env), "Pango", "apt-get install libpango-1.0-0")


@asynccontextmanager
async def service(tmp_path: Path, **env: str) -> AsyncIterator[tuple[str, Path, int]]:
    """``optobot run`` in the background: its base URL, its log file and pid; stopped with SIGTERM (exit code 0)."""
    port, log = free_port(), tmp_path / "optobot.log"
    with log.open("w") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", cwd=tmp_path, stdout=stderr, stderr=stderr,
            env=environment(tmp_path, HTTP_PORT=str(port), **env))
    base = f"http://127.0.0.1:{port}"

    async def healthy() -> bool:
        assert process.returncode is None, log.read_text()
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"{base}/healthz")).status_code == 200
        except httpx.TransportError:
            return False

    try:
        await eventually(healthy, timeout=60)
        yield base, log, process.pid
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 60) == 0, log.read_text()[-3000:]


async def test_run_without_webhook_secret_starts_with_webhooks_off(tmp_path: Path, sandbox: TelegramSandbox) -> None:
    async with service(tmp_path, BOT_TOKEN=TOKEN, TELEGRAM_API_URL=sandbox.base_url) as (base, log, _):
        async with httpx.AsyncClient() as client:
            assert (await client.post(f"{base}/webhooks/marquiz/anything-at-all-123", json={})).status_code == 404
        assert "WEBHOOK_SECRET is not set" in log.read_text()


def child_commands(pid: int) -> list[str]:
    """The command lines of the processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip())
        except OSError:  # it exited meanwhile
            continue
    return found


async def test_run_keeps_render_warm_lean_workers_ready(tmp_path: Path, sandbox: TelegramSandbox) -> None:
    """RENDER_WARM workers (of RENDER_WORKERS) are started with the service, as ``python -m bot.workers``."""
    async with service(tmp_path, BOT_TOKEN=TOKEN, TELEGRAM_API_URL=sandbox.base_url, RENDER_WORKERS="2") as (_, _, pid):
        await eventually(lambda: [command.split(" ", 1)[1] for command in child_commands(pid)] == ["-m bot.workers"],
                         timeout=30)  # RENDER_WARM=1, started as the service starts
    async with service(tmp_path, BOT_TOKEN=TOKEN, TELEGRAM_API_URL=sandbox.base_url, RENDER_WORKERS="2",
                       RENDER_WARM="0") as (_, _, pid):
        assert child_commands(pid) == []


async def test_no_secret_or_token_reaches_the_log(tmp_path: Path, sandbox: TelegramSandbox) -> None:
    amocrm = AmoSandbox(rate_limit=None)
    await amocrm.start()
    port = free_port()
    try:
        env = {"BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": sandbox.base_url, "WEBHOOK_SECRET": SECRET, "LOG_LEVEL": "DEBUG",
               "AMOCRM_BASE_URL": amocrm.base_url, "AMOCRM_ACCESS_TOKEN": amocrm.long_lived_token,
               "PUBLIC_URL": f"http://127.0.0.1:{port}"}  # the webhook's secret token is registered (nobody listens there)
        async with service(tmp_path, **env) as (base, log, _):
            telegram_secret = (await sandbox.wait_for_call("setWebhook", timeout=30)).params["secret_token"]
            async with httpx.AsyncClient(base_url=base) as client:
                quiz = await client.post(f"/webhooks/marquiz/{SECRET}", json={"contacts": {"name": "Анна", "phone": "79991234567"}})
                assert quiz.status_code == 200, quiz.text
                assert (await client.post(f"/webhooks/amocrm/{SECRET}", data={"leads[status][0][id]": "1"})).status_code in (200, 503)
                assert (await client.post(f"/webhooks/marquiz/{SECRET}x", json={})).status_code == 404  # a near miss
                assert (await client.post(f"/webhooks/marquiz/{SECRET}", content=b"{")).status_code == 400
            await eventually(lambda: "/webhooks/amocrm/" in log.read_text())
    finally:
        await amocrm.close()
    text = log.read_text()
    assert "POST /webhooks/marquiz/" in text and "marquiz.accepted" in text  # the log is there, and detailed
    for secret in (SECRET, TOKEN, TOKEN.split(":")[1], amocrm.long_lived_token, telegram_secret):
        assert secret not in text, secret


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_a_traceback_holding_the_bot_token_reaches_the_log_masked(
        tmp_path: Path, sandbox: TelegramSandbox, buyer: Buyer, log_format: str) -> None:
    """A media link whose file Telegram fails to serve: the caller gets 502 (try again), and the log the error, which
    names the download URL (``/file/bot<token>/…``), with its traceback at debug level; the token, the amoCRM client
    secret and the channel secret stay masked."""
    amocrm = AmoSandbox(rate_limit=None)
    await amocrm.start()
    registered = amocrm.chats.register_channel("http://127.0.0.1:9/webhooks/amojo/:scope_id")
    client_secret = "amo-client-secret-0123456789abcdef"
    photo = sandbox.send_media(buyer.id, "photo", content=b"a photo")
    try:
        env = {"BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": sandbox.base_url, "WEBHOOK_SECRET": SECRET, "LOG_LEVEL": "DEBUG",
               "LOG_FORMAT": log_format, "AMOCRM_BASE_URL": amocrm.base_url, "AMOCRM_ACCESS_TOKEN": amocrm.long_lived_token,
               "AMOCRM_CLIENT_ID": "optobot-client", "AMOCRM_CLIENT_SECRET": client_secret,
               "AMOCRM_REDIRECT_URI": "https://example.com/oauth", "AMOCRM_CHANNEL_ID": registered.id,
               "AMOCRM_CHANNEL_SECRET": registered.secret, "AMOJO_BASE_URL": amocrm.base_url}
        async with service(tmp_path, **env) as (base, log, _):
            link = MediaLinks(registered.secret.encode(), lambda: base).url(photo["photo"][-1]["file_id"])
            sandbox.fail_next("file", error_code=502)  # Telegram's file server fails the download
            async with httpx.AsyncClient() as client:
                answer = await client.get(link)
                assert answer.status_code == 502 and "try again" in answer.json()["error"]
            await eventually(lambda: "ClientResponseError" in log.read_text())
    finally:
        await amocrm.close()
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "/file/bot***/" in text, text[-3000:]  # logged, and masked
    if log_format == "json":
        assert all(json.loads(line) for line in text.splitlines() if line.strip())
    for secret in (TOKEN, TOKEN.split(":")[1], SECRET, amocrm.long_lived_token, client_secret, registered.secret):
        assert secret not in text, secret


def test_every_setting_is_documented() -> None:
    """README.md or a document it links names every setting."""
    readme = PROJECT_DIR / "README.md"
    linked = {readme.parent / target for target in re.findall(r"\]\(([^)#]+\.md)\)", readme.read_text(encoding="utf-8"))}
    docs = "".join(path.read_text(encoding="utf-8") for path in {readme, *linked})
    missing = [field.alias for field in Settings.model_fields.values() if not re.search(rf"\b{field.alias}\b", docs)]
    assert not missing, f"settings not documented in README.md or the documents it links: {missing}"


def test_the_log_masks_tokens_it_was_never_told_about() -> None:
    line = ('GET https://api.telegram.org/bot123456:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawq/getMe Authorization: Bearer abc.def-1 '
            '{"refresh_token": "def50200aa", "access_token":"eyJ0eXAiOiJKV1Qi.eyJhdWQiOiI.x1-y"} POST /webhooks/amocrm/s3cr3t?x=1')
    masked = mask(line, ["s3cr3t"])
    assert all(secret not in masked for secret in ("AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawq", "abc.def-1", "def50200aa", "eyJ0eXAiOiJKV1Qi", "s3cr3t"))
    assert masked.startswith("GET https://api.telegram.org/bot***/getMe") and "/webhooks/amocrm/***?x=1" in masked


def test_check_reports_webhooks_off_without_failing(cli) -> None:
    lines = [line for line in cli("check").stdout.splitlines() if line.split(":")[0].split()[-1] == "webhooks"]
    assert len(lines) == 1 and "FAIL" not in lines[0] and "off" in lines[0] and "WEBHOOK_SECRET" in lines[0], lines
