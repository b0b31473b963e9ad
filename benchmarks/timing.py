"""Interleaved timing shared by the speed benchmarks: every model once per round in a fresh random order, so that
another process's load falls on all models alike; medians, IQRs and per-round ratios from one run."""
from __future__ import annotations

import os
import random
import statistics
import subprocess
import time
from typing import Callable


def uptime() -> str:
    """The load average, printed before and after a run on a shared machine."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return repr(os.getloadavg())


def interleaved(calls: dict[str, Callable[[], object]], repeats: int, seed: int = 0) -> dict[str, list[float]]:
    """Seconds per call: one warm-up call each, then `repeats` rounds of every call in a fresh random order."""
    for call in calls.values():
        call()
    rng = random.Random(seed)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name in rng.sample(list(calls), len(calls)):
            t0 = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def summarise(times: dict[str, list[float]], refs: tuple[str, ...]) -> dict[str, dict]:
    """Per name: median, IQR, min and max in ms, and `speedup_vs_<ref>` = the median over rounds of ref's time /
    this time in the same round (a ratio within rounds, robust to load that changes between rounds)."""
    rows = {}
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=4, method="inclusive")
        row = {"median_ms": 1e3 * statistics.median(ts), "iqr_ms": 1e3 * (q[2] - q[0]),
               "min_ms": 1e3 * min(ts), "max_ms": 1e3 * max(ts)}
        for ref in refs:
            if ref in times:
                row[f"speedup_vs_{ref.replace(' ', '_')}"] = statistics.median(a / b for a, b in zip(times[ref], ts))
        rows[name] = row
    return rows
