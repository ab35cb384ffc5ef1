"""The report as files (PDF, XLSX, CSV) and the command line: ``optobot report`` and ``optobot analytics spend import``."""
from __future__ import annotations

import asyncio
import csv
import io
from datetime import timedelta
from pathlib import Path

import pytest
from openpyxl import load_workbook
from pypdf import PdfReader
from sqlalchemy import select

from bot.analytics import export
from bot.analytics.labels import Labels
from bot.analytics.models import AdSpend
from bot.analytics.period import Period
from bot.analytics.queries import dimensions
from bot.analytics.report import Report, build
from bot.cli import main
from bot.config import DEFAULT_QUIZ
from bot.db.session import database
from bot.quiz import load_quiz
from tests.analytics_support import MOSCOW, TODAY, day, seed_history
from tests.conftest import command_line
from tests.crm_support import open_db

QUIZ = load_quiz(DEFAULT_QUIZ)
PERIOD = Period(TODAY - timedelta(days=6), TODAY, MOSCOW)
LABELS = Labels("ru", QUIZ, {9001: "Иван Смирнов", 9002: "Ольга Кузнецова"})


async def seeded_report(url: str) -> Report:
    db = await open_db(url)
    try:
        await seed_history(db)
        return await build(db, QUIZ, PERIOD, by=dimensions(QUIZ))
    finally:
        await db.close()


def plain(text: str) -> str:
    return text.replace("\xa0", " ")


async def test_xlsx_has_a_sheet_per_breakdown_of_plain_numbers(database_url: str) -> None:
    book = load_workbook(io.BytesIO(export.xlsx(await seeded_report(database_url), LABELS)))
    assert book.sheetnames[:3] == ["Воронка", "Путь", "Источник"] and len(book.sheetnames) == 1 + len(dimensions(QUIZ)) + 4
    assert book.sheetnames[-4:] == ["Скорость ответа", "Менеджеры", "Рассылки и прогревы", "По дням"]
    sources = book["Источник"]
    header = [cell.value for cell in sources[1]]
    assert header[:5] == ["Источник", "Пришли", "Каталог отправлен", "Ключевой этап", "Ключевой этап, доля"]
    rows = {row[0]: row for row in sources.iter_rows(min_row=2, values_only=True)}
    assert rows["vk"][1:5] == (2, 0, 1, 0.5) and rows["vk"][header.index("Расход")] == 1500
    assert rows["yandex"][header.index("Выручка")] == 150_000 and rows["yandex"][header.index("Тестовая партия")] == 3000
    assert rows["Всего"][1] == 5 and rows["Всего"][3] == 2 and rows["Всего"][header.index("ROMI")] == pytest.approx((150_000 - 4500) / 4500)
    assert sources["E2"].number_format == "0.0%"
    managers = {row[0]: row for row in book["Менеджеры"].iter_rows(min_row=2, values_only=True)}
    assert managers["Ольга Кузнецова"][1:4] == (1, 30, 30) and managers["Иван Смирнов"][6:8] == (43200, 43200)  # outside hours
    funnel = {row[0]: row for row in book["Воронка"].iter_rows(min_row=2, values_only=True)}
    assert funnel["Тестовая партия отправлена"][1:4] == (0.4, 0.0, pytest.approx(0.4))


async def test_pdf_holds_the_headline_figures_and_the_previous_period(database_url: str) -> None:
    data = export.pdf(await seeded_report(database_url), LABELS)
    assert data.startswith(b"%PDF-")
    text = plain("\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages))
    assert f"Продажи: отчёт за {day(6):%d.%m.%Y}–{TODAY:%d.%m.%Y}" in text
    assert "Тестовая партия отправлена: 2 из 5 — 40 %*" in text
    assert "прошлый период: 0 из 1 — 0 %* (+40 п.п.)" in text
    assert f"Сравнение с {day(13):%d.%m.%Y}–{day(7):%d.%m.%Y}" in text
    assert "Выручка 150 000 ₽ · ROMI 3 233 %" in text
    assert "Источник" in text and "Менеджер" in text and "Какая категория товаров вас интересует?" in text


def test_the_pdf_loads_nothing_from_outside() -> None:
    fetch = export.fetcher()
    assert fetch.fetch("data:image/svg+xml;base64,PHN2Zy8+").read() == b"<svg/>"
    for url in ("file:///etc/hostname", "http://127.0.0.1:9/chart.svg"):
        with pytest.raises(ValueError, match="disallowed protocol"):
            fetch.fetch(url)


async def test_csv_lists_every_group_of_every_breakdown(database_url: str) -> None:
    data = export.render(await seeded_report(database_url), LABELS, "csv")
    assert data.startswith("\ufeff".encode())  # Excel reads the Cyrillic
    text = data.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], rows[1:]
    assert header[:4] == ["breakdown", "group", "Пришли", "Каталог отправлен"]
    assert {row[0] for row in body} == set(dimensions(QUIZ))
    by_source = {row[1]: row for row in body if row[0] == "source"}
    assert by_source["vk"][2] == "2" and by_source["vk"][header.index("Ключевой этап, доля")] == "0.5"
    assert by_source["без метки"][2] == "1" and by_source["Всего"][2] == "5"
    categories = {row[1]: int(row[2]) for row in body if row[0] == "category"}
    assert categories == {"Обувь": 3, "Детская одежда": 2, "нет ответа": 1, "Всего": 5}  # a lead in each category it picked


# ----------------------------------------------------------------- command line
@pytest.fixture
def seeded_file(sqlite_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The seeded history in a SQLite file; the CLI reads its settings from the environment."""
    async def seed() -> None:
        async with database(sqlite_url) as db:
            await seed_history(db)

    asyncio.run(seed())
    command_line(monkeypatch, sqlite_url, tmp_path)
    return sqlite_url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    return exit_.value.code, capsys.readouterr().out


def test_report_command_writes_each_format(seeded_file: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    period = ["--from", day(6).isoformat(), "--to", TODAY.isoformat()]
    code, out = run(capsys, "report", *period, "--by", "source,campaign", "-o", str(tmp_path / "out" / "week.xlsx"))
    assert code == 0 and out.strip() == f"{tmp_path / 'out' / 'week.xlsx'}: {day(6)}…{TODAY}, 5 leads, 2 reached the key stage"
    assert load_workbook(tmp_path / "out" / "week.xlsx").sheetnames == ["Воронка", "Источник", "Кампания", "Скорость ответа",
                                                                        "Менеджеры", "Рассылки и прогревы", "По дням"]
    code, out = run(capsys, "report", *period, "--filter", "source=vk", "--format", "csv", "-o", str(tmp_path / "vk.txt"))
    assert code == 0 and "2 leads, 1 reached the key stage" in out
    code, out = run(capsys, "report", *period, "--lang", "en", "-o", str(tmp_path / "week.pdf"))
    assert code == 0 and "Test batch sent: 2 of 5 — 40%*" in plain(PdfReader(tmp_path / "week.pdf").pages[0].extract_text())


def test_report_command_names_a_wrong_option(seeded_file: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    period = ["--from", day(6).isoformat(), "--to", TODAY.isoformat()]
    code, out = run(capsys, "report", *period, "--by", "colour", "-o", str(tmp_path / "r.pdf"))
    assert code == 2 and out.startswith("optobot report: 'colour': expected one of path, source, medium, campaign, week, manager")
    code, out = run(capsys, "report", *period, "-o", str(tmp_path / "r.docx"))
    assert code == 2 and "expected one of *.pdf, *.xlsx, *.csv" in out and not (tmp_path / "r.docx").exists()
    code, out = run(capsys, "report", "--from", TODAY.isoformat(), "--to", day(3).isoformat(), "-o", str(tmp_path / "r.pdf"))
    assert code == 2 and "ends" in out and "before it starts" in out
    code, out = run(capsys, "report", *period, "--filter", "manager=Пётр", "-o", str(tmp_path / "r.pdf"))
    assert code == 2 and "manager=Пётр" in out


def test_spend_import_checks_the_whole_file_and_replaces_what_it_imported(seeded_file: str, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    def spend() -> list[tuple[str, str, str, int]]:
        async def read() -> list[tuple[str, str, str, int]]:
            async with database(seeded_file) as db, db() as session:
                rows = (await session.execute(select(AdSpend.day, AdSpend.source, AdSpend.campaign, AdSpend.amount).order_by(AdSpend.id))).all()
            return [(str(d), s, c, a) for d, s, c, a in rows]
        return asyncio.run(read())

    before = spend()
    broken = tmp_path / "broken.csv"
    broken.write_text("Дата;Источник;Кампания;Расход, ₽\n01.06.2025;yandex;shoes;1 200,50\n31.02.2025;vk;;100\n02.06.2025;;x;5\n"
                      "03.06.2025;vk;;-5\n", encoding="utf-8")
    code, out = run(capsys, "analytics", "spend", "import", str(broken))
    assert code == 1 and out.splitlines() == [
        f"{broken}: nothing imported:",
        "  line 3: date '31.02.2025': write it as 2025-06-01 or 01.06.2025",
        "  line 4: source is empty",
        "  line 5: amount '-5' is negative",
    ]
    assert spend() == before

    good = tmp_path / "direct.csv"
    good.write_text("\ufeffДата;Источник;Кампания;Расход, ₽\n01.06.2025;yandex;shoes;1 200,50\n01.06.2025;yandex;shoes;99,50\n"
                    "02.06.2025;vk;;300\n", encoding="utf-8")
    code, out = run(capsys, "analytics", "spend", "import", str(good))
    assert code == 0 and out.strip() == f"{good}: 2 rows, 2025-06-01…2025-06-02: vk 300 ₽, yandex 1,300 ₽"
    assert spend()[len(before):] == [("2025-06-01", "yandex", "shoes", 130_000), ("2025-06-02", "vk", "", 30_000)]
    good.write_text("date\tsource\tcampaign\tamount\n2025-06-01\tyandex\tshoes\t1000\n", encoding="utf-8")  # a corrected export
    code, _ = run(capsys, "analytics", "spend", "import", str(good))
    assert code == 0 and spend()[len(before):] == [("2025-06-02", "vk", "", 30_000), ("2025-06-01", "yandex", "shoes", 100_000)]
    code, out = run(capsys, "analytics", "spend", "import", str(tmp_path / "missing.csv"))
    assert code == 1 and "No such file" in out
