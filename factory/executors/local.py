"""In-process executor: stages chained in a plain loop, in input order. For tests and debugging.

Each stage gets batches of its own `resources.batch_size` (counting the records it will process;
rejected records ride along untouched), so a stage behaves here as on Ray.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from factory.executors.stats import StageStats, StageTimeline, since
from factory.records import Record
from factory.stage import Stage


class LocalExecutor:
    name = "local"

    def __init__(self):
        self.failures = 0
        self._stats = StageStats()
        self._timeline = StageTimeline()

    def map(self, stages: list[Stage], records: Iterable[Record]) -> Iterator[Record]:
        """Streams records through `stages`; when the map ends (or is abandoned), tears down the
        stages it set up and adds what they did to `stage_stats()`."""
        before = [stage.report() for stage in stages]
        fresh = [stage for stage in stages if not stage.is_set_up]  # the caller's own setups stay
        stream: Iterator[Record] = iter(records)
        for stage in stages:
            stream = batched_through(stage, stream, self._timeline)
        try:
            yield from stream
        finally:
            for stage, report in zip(stages, before):
                self._stats.add(stage.name, since(stage.report(), report))
            for stage in fresh:
                stage.release()

    def stage_stats(self) -> dict[str, dict]:
        """Stage name -> {"records", "seconds", "passed", "dropped_<reason>"...} over every map so far."""
        return self._stats.as_dict()

    def timeline(self) -> dict:
        """Records each stage finished, binned over time (factory.executors.stats.StageTimeline)."""
        return self._timeline.as_dict()

    def close(self) -> None:
        pass


def batched_through(stage: Stage, records: Iterator[Record], timeline: StageTimeline | None = None) -> Iterator[Record]:
    """Runs `stage` on batches of `batch_size` records to process, lazily and in order; each
    batch's records are counted in `timeline` when the stage finishes it."""
    size = max(1, stage.resources.batch_size)
    batch: list[Record] = []
    active = 0
    for record in records:
        batch.append(record)
        active += not record.rejected
        if active == size:
            yield from _through(stage, batch, active, timeline)
            batch, active = [], 0
    if active:
        yield from _through(stage, batch, active, timeline)
    else:  # only rejected records left: no need to set the stage up for them
        yield from batch


def _through(stage: Stage, batch: list[Record], active: int, timeline: StageTimeline | None) -> list[Record]:
    out = stage(batch)
    if timeline is not None:
        timeline.add(stage.name, active)
    return out
