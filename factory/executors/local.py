"""In-process executor: stages chained in a plain loop, in input order. For tests and debugging."""

from __future__ import annotations

from itertools import islice
from typing import Iterable, Iterator

from factory.records import Record
from factory.stage import Stage


class LocalExecutor:
    name = "local"

    def __init__(self):
        self.failures = 0

    def map(self, stages: list[Stage], records: Iterable[Record]) -> Iterator[Record]:
        it = iter(records)
        size = max(1, stages[0].resources.batch_size)
        while batch := list(islice(it, size)):
            for stage in stages:
                batch = stage(batch)
            yield from batch

    def close(self) -> None:
        pass
