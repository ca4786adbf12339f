"""Per-stage counts and time, summed over maps (and on Ray over actors): what `stage_stats()` gives.

A stage's `report()` is cumulative over its life, and the same stage object may serve several
maps (or arrive on a worker already carrying counts), so executors add the difference between
the report after a map and the one before it.
"""

from __future__ import annotations


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
