"""Charts and report files are drawn in a worker process: matplotlib and WeasyPrint hold the interpreter
for a second or more, and the bot's event loop must keep answering buyers meanwhile."""
from __future__ import annotations

import asyncio
from typing import Any

from bot.analytics.labels import Labels
from bot.analytics.report import REPORT_CHARTS, Report
from bot.workers import WorkerPool

WORKERS = 2  # the charts of a report are drawn side by side


# Run in the workers: matplotlib, openpyxl and WeasyPrint are imported there, never in the bot's process.
def _chart(name: str, report: Report, labels: Labels) -> bytes:
    from bot.analytics import charts

    return charts.draw(name, report, labels)


def _breakdown_chart(report: Report, labels: Labels, dimension: str) -> bytes:
    from bot.analytics import charts

    return charts.conversion(report.breakdowns.get(dimension, []), dimension, labels)


def _file(report: Report, labels: Labels, fmt: str) -> bytes:
    from bot.analytics import export

    return export.render(report, labels, fmt)


class Drawing:
    """Lean worker processes (:mod:`bot.workers`: not the bot's modules), started on first use."""

    def __init__(self) -> None:
        self._pool: WorkerPool | None = None

    async def _run(self, function: Any, *args: Any) -> Any:
        self._pool = self._pool or WorkerPool(WORKERS)  # a worker that dies is replaced, its drawing retried once
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)
    async def charts(self, report: Report, labels: Labels) -> list[bytes]:
        """The four PNG charts of /report, drawn side by side."""
        return list(await asyncio.gather(*(self._run(_chart, name, report, labels) for name in REPORT_CHARTS)))

    async def breakdown(self, report: Report, labels: Labels, dimension: str) -> bytes:
        return await self._run(_breakdown_chart, report, labels, dimension)

    async def file(self, report: Report, labels: Labels, fmt: str) -> bytes:
        return await self._run(_file, report, labels, fmt)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
