"""The broadcast CLI (``python -m broadcasts``, the same commands as ``optobot broadcast``) on a real database."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.config import PROJECT_DIR
from bot.db.models import Lead
from bot.db.session import database as open_database
from broadcasts.__main__ import main
from tests.conftest import command_line

EXAMPLES = sorted((PROJECT_DIR / "broadcasts" / "examples").glob("*.yaml"))
SEQUENCES = PROJECT_DIR / "broadcasts" / "sequences.yaml"
CAMPAIGN = """
name: Новинки обуви
segment: {category: [shoes]}
message:
  text: "{{ first_name }}, новая коллекция уже на складе!"
  buttons:
    - {text: Хочу тестовую партию, action: test}
"""


@pytest.fixture
def database(sqlite_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A migrated SQLite database with four buyers; the CLI reads its settings from the environment."""
    async def seed() -> None:
        async with open_database(sqlite_url) as db, db.begin() as session:
            session.add_all([Lead(tg_user_id=100 + i, first_name=f"Покупатель{i}", interests={"category": ["shoes"]}) for i in range(3)])
            session.add(Lead(tg_user_id=200, first_name="Другая", interests={"category": ["women"]}))

    asyncio.run(seed())
    command_line(monkeypatch, sqlite_url, tmp_path)
    return sqlite_url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_plan_preview_schedule_and_control(database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    campaign = tmp_path / "campaign.yaml"
    campaign.write_text(CAMPAIGN, encoding="utf-8")

    code, out = run(capsys, "plan", str(campaign))
    assert code == 0 and "«Новинки обуви»: 3 recipients, about 0 s at 25 msg/s" in out

    code, out = run(capsys, "preview", str(campaign), "--sample", "2")
    assert code == 0 and out.splitlines()[0] == "3 recipients" and "Покупатель0" in out and "Покупатель2" not in out

    code, out = run(capsys, "schedule", str(campaign), "--at", "2099-01-01 10:00")
    assert code == 0 and "#1 «Новинки обуви» — запланирована" in out and "01.01.2099 10:00 (Europe/Moscow)" in out

    code, out = run(capsys, "status")
    assert code == 0 and "#1" in out and "scheduled" in out
    assert run(capsys, "pause", "1") == (0, "#1: paused\n")
    assert run(capsys, "resume", "1") == (0, "#1: scheduled\n")
    assert run(capsys, "cancel", "1") == (0, "#1: cancelled\n")
    assert run(capsys, "resume", "1") == (1, "#1: cancelled (resume not possible)\n")

    code, out = run(capsys, "stats", "1")
    assert code == 0 and "#1 «Новинки обуви» — отменена" in out and "0 получателей: доставлено 0" in out


def test_a_draft_can_only_be_cancelled(database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``schedule --draft``: ``resume`` and ``pause`` are refused naming the state (exit 1), ``cancel`` ends it."""
    campaign = tmp_path / "campaign.yaml"
    campaign.write_text(CAMPAIGN, encoding="utf-8")
    code, out = run(capsys, "schedule", str(campaign), "--draft")
    assert code == 0 and "#1 «Новинки обуви»" in out

    assert run(capsys, "resume", "1") == (1, "#1: draft (resume not possible)\n")
    assert run(capsys, "pause", "1") == (1, "#1: draft (pause not possible)\n")
    assert run(capsys, "cancel", "1") == (0, "#1: cancelled\n")


def test_plan_refuses_a_message_that_breaks_for_some_recipient(database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    campaign = tmp_path / "broken.yaml"
    campaign.write_text(CAMPAIGN.replace("{{ first_name }}", "<b>{{ first_name }}"), encoding="utf-8")
    code, out = run(capsys, "plan", str(campaign))
    assert code == 1 and "3 recipient(s) fail validation" in out and "unclosed <b>" in out
    assert run(capsys, "schedule", str(campaign))[0] == 1
    assert run(capsys, "status") == (0, "")

    campaign.write_text("name: x\nmessage: {text: hi}\nsegment: {categories: [shoes]}\n", encoding="utf-8")
    code, out = run(capsys, "plan", str(campaign))
    assert code == 1 and "segment.categories" in out


@pytest.mark.parametrize("example", [*EXAMPLES, SEQUENCES], ids=[path.name for path in [*EXAMPLES, SEQUENCES]])
def test_shipped_examples_are_valid(database: str, example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "plan", str(example))
    assert code == 0, out
    if "sequences" in example.name or "sequence_" in example.name:
        assert "steps, valid" in out  # checked as sequences, not as a campaign


def test_plan_on_a_never_migrated_database_and_on_broken_sequences(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'fresh.sqlite3'}")
    monkeypatch.chdir(tmp_path)
    code, out = run(capsys, "plan", str(EXAMPLES[0]))
    assert code == 0 and "0 recipients" in out, out
    broken = tmp_path / "sequences.yaml"
    broken.write_text("sequences:\n  - {key: warm, name: W, entry: {event: catalog_sent}, steps: [{key: a, delay: 1d, message: {text: '<b>x'}}]}\n")
    code, out = run(capsys, "plan", str(broken))
    assert code == 1 and "warm.a (ru): unclosed <b>" in out and "Field required" not in out, out


def test_one_hostile_lead_does_not_hold_back_the_shipped_examples(database: str, capsys: pytest.CaptureFixture[str]) -> None:
    async def seed() -> None:
        async with open_database(database) as db, db.begin() as session:
            shoes = {"category": ["shoes"], "city": "Казань"}
            session.add_all([Lead(tg_user_id=300 + i, first_name=f"Покупатель{i}", stage="qualified", interests=shoes) for i in range(3)])
            session.add(Lead(tg_user_id=400, first_name="Я" * 1000, stage="qualified", interests=shoes))  # a quiz name without spaces
            session.add(Lead(tg_user_id=401, first_name="Город", stage="qualified", interests={**shoes, "city": "Х" * 1000}))

    asyncio.run(seed())
    code, out = run(capsys, "plan", str(PROJECT_DIR / "broadcasts" / "examples" / "catalog_reminder.yaml"))
    assert code == 0 and "5 recipients" in out and "fail" not in out, out
    code, out = run(capsys, "plan", str(PROJECT_DIR / "broadcasts" / "examples" / "new_arrivals.yaml"))
    assert code == 0 and "5 recipients" in out, out
    assert "1 recipient(s) will be skipped" in out and "lead #" in out and "too long" in out
