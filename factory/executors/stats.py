"""Per-stage counts and time, summed over maps (and on Ray over actors): what `stage_stats()` gives.

A stage's `report()` is cumulative over its life, and the same stage object may serve several
maps (or arrive on a worker already carrying counts), so executors add the difference between
the report after a map and the one before it.
"""

from __future__ import annotations

import time


def since(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """What a stage did between two of its reports."""
    return {key: value - before.get(key, 0) for key, value in after.items()}


class StageStats:
    """Totals by stage name: {"records": n, "seconds": s, "passed": n, "dropped_<reason>": n, ...}."""

    def __init__(self):
        self._totals: dict[str, dict[str, float]] = {}

    def add(self, name: str, counts: dict[str, float]) -> None:
        total = self._totals.setdefault(name, {"records": 0, "seconds": 0.0})
        for key, value in counts.items():
            if value:  # a reason seen in an earlier map only adds nothing
                total[key] = total.get(key, 0) + value

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {name: {**counts, "seconds": round(counts["seconds"], 3)} for name, counts in self._totals.items()}


class StageTimeline:
    """Records each stage finished, binned by wall-clock time since the executor started: what
    `factory report` plots as throughput per stage over time. Bins double in width when the run
    outgrows `max_bins`, so memory and the saved file stay small however long the run."""

    def __init__(self, max_bins: int = 240, clock=time.time):
        self.clock = clock
        self.started = clock()
        self.bin_s = 1.0
        self.max_bins = max_bins
        self._bins: dict[str, dict[int, int]] = {}

    def add(self, name: str, records: int) -> None:
        if records <= 0:
            return
        i = int((self.clock() - self.started) / self.bin_s)
        while i >= self.max_bins:
            self.bin_s *= 2
            self._bins = {n: _halve(b) for n, b in self._bins.items()}
            i //= 2
        bins = self._bins.setdefault(name, {})
        bins[i] = bins.get(i, 0) + records

    def as_dict(self) -> dict:
        """{"started": epoch s, "bin_s": s, "stages": {name: [[bin index, records], ...]}}"""
        return {"started": round(self.started, 3), "bin_s": self.bin_s,
                "stages": {n: sorted(b.items()) for n, b in self._bins.items()}}


def _halve(bins: dict[int, int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for i, n in bins.items():
        out[i // 2] = out.get(i // 2, 0) + n
    return out
