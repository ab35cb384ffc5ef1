"""Helpers shared by the benchmarks."""
from __future__ import annotations

import asyncio
import math
from pathlib import Path

import httpx


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (``share`` in 0..1)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


async def ready(url: str, process: asyncio.subprocess.Process, log: Path | None = None) -> None:
    """Until ``url`` (an instance's ``/readyz`` or ``/healthz``) answers 200; the instance exiting first (with its log's
    end) or 120 s without an answer fails."""
    async with httpx.AsyncClient() as client:
        for _ in range(600):
            if process.returncode is not None:
                tail = f": {log.read_text()[-2000:]}" if log is not None else ""
                raise RuntimeError(f"optobot run for {url} exited with {process.returncode}{tail}")
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"optobot run for {url} not ready in 120 s")


def memory(pid: int, leave_out: tuple[int, ...] = ()) -> dict[str, float]:
    """RSS and PSS (MB) of ``pid`` and its children but ``leave_out``, summed, and the number of processes."""
    pids = [pid] + [int(p.name) for p in Path("/proc").iterdir()
                    if p.name.isdigit() and _parent(p) == pid and int(p.name) not in leave_out]
    rss = pss = 0
    for each in pids:
        with open(f"/proc/{each}/smaps_rollup") as rollup:
            fields = dict(line.split(":", 1) for line in rollup if ":" in line and not line.startswith(("0", "5", "7")))
        rss += int(fields["Rss"].split()[0])
        pss += int(fields["Pss"].split()[0])
    return {"processes": len(pids), "rss_mb": round(rss / 1024), "pss_mb": round(pss / 1024)}


def _parent(entry: Path) -> int | None:
    try:
        return int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None
