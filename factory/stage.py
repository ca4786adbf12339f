"""The stage interface: settings in the constructor, models in `setup()`, batches in `__call__`,
models released in `teardown()`.

A stage never imports an executor: it must run in a plain Python loop. Executors read
`resources` to place it (CPUs, fractional GPUs, batch and pool sizes), call `release()` when a map
is done with it, and read `report()` for its counts and time.
"""

from __future__ import annotations

import copy
import logging
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from factory.records import Record

log = logging.getLogger(__name__)


@dataclass
class Resources:
    """What a stage asks of the executor; also the `resources:` section of every component's
    settings (e.g. `generate.resources.num_gpus=0.5`)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0  # fractions allowed: 0.5 packs two actors on one GPU
    batch_size: int = 1
    pool_size: int = 1  # actors in the Ray executor's pool


@dataclass
class FilterConfig:
    """Settings every filter has; a filter's settings class extends it with its thresholds."""

    enabled: bool = True
    resources: Resources = field(default_factory=lambda: Resources(pool_size=2))


class Stage:
    """Base class. Subclasses implement `process(records)` on non-rejected records only.

    Counts: `stats` holds `passed` / `dropped_<reason>` per record out; `records_in` and `seconds`
    the records given to `process` and the wall time spent there (retries included, setup not).
    """

    name: str = "stage"
    retries: int = 1  # extra attempts for a record whose processing raised
    # the pair payload fields (factory.payload.PairMedia) this stage reads and writes; the stage
    # list is checked against them before any work (factory.payload.check_contracts)
    requires: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()

    def __init__(self, resources: Resources | None = None):
        self.resources = resources or Resources()
        self.stats: Counter = Counter()
        self.records_in = 0
        self.seconds = 0.0
        self._ready = False

    def setup(self) -> None:
        """Load models here, not in __init__, so a stage pickles cheaply into a worker."""

    def teardown(self) -> None:
        """Release what `setup()` loaded (models, GPU memory, threads). Called once per setup."""

    def process(self, records: list[Record]) -> list[Record]:
        raise NotImplementedError

    @property
    def is_set_up(self) -> bool:
        return self._ready

    def release(self) -> None:
        """What executors call when done with a stage: teardown if set up; a later batch sets it up again."""
        if self._ready:
            self._ready = False
            self.teardown()

    def report(self) -> dict[str, float]:
        """{"records": in, "seconds": in process, "passed": n, "dropped_<reason>": n, ...}"""
        return {"records": self.records_in, "seconds": self.seconds, **self.stats}

    def ensure_set_up(self) -> None:
        if not self._ready:
            self.setup()
            self._ready = True

    def __call__(self, batch: list[Record]) -> list[Record]:
        self.ensure_set_up()
        passthrough = [r for r in batch if r.rejected]
        active = [r for r in batch if not r.rejected]
        if not active:
            return passthrough
        started = time.perf_counter()
        snapshot = [(copy.copy(r.media), copy.deepcopy(r.meta)) for r in active]
        try:
            out = self.process(active)
        except Exception:  # a bad batch: undo its partial edits, then isolate the record that breaks
            out = []
            for record, (media, meta) in zip(active, snapshot):
                record.media, record.meta = media, meta
                out.extend(self._process_one_safely(record))
        self.records_in += len(active)
        self.seconds += time.perf_counter() - started
        for r in out:
            reason = r.rejected or (r.filtered if r.meta.get("filtered_by") == self.name else None)
            self.stats[f"dropped_{reason}" if reason else "passed"] += 1
        return passthrough + out

    def _process_one_safely(self, record: Record) -> list[Record]:
        media, meta = copy.copy(record.media), copy.deepcopy(record.meta)
        for attempt in range(1 + self.retries):  # transient errors (a busy GPU, a flaky mount) pass
            record.media, record.meta = copy.copy(media), copy.deepcopy(meta)
            try:
                return self.process([record])
            except Exception as exc:
                error = exc
                log.warning("%s failed on %s (attempt %d):\n%s", self.name, record.key, attempt + 1,
                            traceback.format_exc())
        record.meta["reject_detail"] = f"{type(error).__name__}: {error}"[:500]  # samples.parquet's detail
        return [record.reject(f"{self.name}_error:{type(error).__name__}", self.name)]


class Filter(Stage):
    """A filter only scores. The base class records the scores, applies the thresholds and
    counts kept/dropped by reason (datatrove's base filter, with scores kept for re-thresholding).

    With `soft`, a failing pair is only marked and still written (to rejected shards) with all its
    scores, so `factory refilter` can loosen a threshold later without regenerating anything.

    Subclasses implement `score(record) -> dict[str, float]` and set `thresholds`, a mapping
    score name -> (op, value) where op is ">=" / ">" / "<=" / "<"; failing one rejects with
    reason `<score>_<below|above>`.
    """

    def __init__(self, thresholds: dict[str, tuple[str, float]], resources: Resources | None = None,
                 soft: bool = False):
        super().__init__(resources)
        self.thresholds = thresholds
        self.soft = soft  # `write.keep_rejected`: failing pairs are marked and kept aside

    def score(self, record: Record) -> dict[str, float]:
        raise NotImplementedError

    def process(self, records: list[Record]) -> list[Record]:
        return [self.judge(record, self.score(record)) for record in records]

    def judge(self, record: Record, scores: dict[str, float]) -> Record:
        """Record the scores and apply the thresholds: a hard rejection, or with `soft` a mark
        (`meta["filtered"]`) that keeps the pair flowing to the rejected shards."""
        record.meta.setdefault("scores", {}).update(scores)
        reason = self.verdict(scores)
        if not reason:
            return record
        record.meta.setdefault("filtered", reason)  # a threshold failure: refilter may revisit it
        record.meta.setdefault("filtered_by", self.name)  # the first failing filter names it
        return record if self.soft else record.reject(reason, self.name)

    def verdict(self, scores: dict[str, float]) -> str | None:
        return threshold_verdict(scores, self.thresholds)


_OPS = {">=": lambda a, b: a >= b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, "<": lambda a, b: a < b}


def threshold_verdict(scores: dict[str, float], thresholds: dict[str, tuple[str, float]]) -> str | None:
    """Reason for rejection, or None when every thresholded score passes."""
    for name, (op, value) in thresholds.items():
        if name not in scores:
            continue
        if not _OPS[op](scores[name], value):
            return f"{name}_{'below' if op.startswith('>') else 'above'}_{value:g}"
    return None


ModelPath = tuple[str, "str | None", str]  # (key inside the filter's section, path, "file" | "folder")


@dataclass(frozen=True)
class FilterSpec:
    """Everything the factory needs to know about a filter, in one registry entry
    (filters/registry.py): the pipeline builds it, `refilter` re-judges with its thresholds, the
    model-path check and the README-table test read its settings."""

    name: str  # its section: filters.<name>
    settings: type  # a FilterConfig subclass
    build: Callable[..., Filter]  # build(settings, soft=bool) -> the filter stage
    thresholds: Callable[[Any], dict[str, tuple[str, float]]]  # from settings alone, no models
    model_paths: Callable[[Any], list[ModelPath]] = lambda settings: []
