"""Charts and report files are drawn in a worker process: matplotlib and WeasyPrint hold the interpreter
for a second or more, and the bot's event loop must keep answering buyers meanwhile."""
from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import structlog

from bot.analytics.labels import Labels
from bot.analytics.report import Report

log = structlog.get_logger(__name__)


REPORT_CHARTS = ("funnel", "sources", "managers", "days")  # the charts of /report and the digest, in order
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
    """Worker processes, started on first use ("spawn": never fork a process running an event loop)."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    async def _run(self, function: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            pool = self._pool = self._pool or ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("spawn"))
            try:
                return await loop.run_in_executor(pool, function, *args)
            except BrokenProcessPool:
                if attempt == 2:
                    raise
                log.warning("analytics.drawing_worker_died", note="restarting the workers and drawing again")
                if self._pool is pool:  # not replaced yet by another drawing that saw it die
                    pool.shutdown(wait=False, cancel_futures=True)
                    self._pool = None
        raise AssertionError("unreachable")

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
