"""Ray executor: pools of plain Ray actors, one pool per group of fused stages.

Why actors and not Ray Data: on small machines Ray Data's streaming executor costs most of a core
(measured in ENVIRONMENT.md: 1.04x with two actors vs 1.49x for plain actors on 2 cores), and the
factory's stages are coarse (a whole video, a whole pair), so a simple ray.wait loop keeps every
actor busy. Consecutive stages with the same resources are fused into one actor (like Ray Data's
operator fusion), so a pair's frames cross the object store once.

Pools are sized from the CPUs and GPUs free now (plus what this executor's own pools hold), not
from the cluster's total, so they do not wait forever next to another Ray job, such as a Ray Train
job holding CPUs. GPU stages ask Ray for `num_gpus` and use the device Ray assigns
(CUDA_VISIBLE_DEVICES is set by Ray for the actor). A GPU request the cluster can never meet fails
fast with a clear message instead of pending forever.

Actors outlive a map (their imports and warm processes serve the next phase), but a map's stages do
not: when the map ends or is abandoned, every actor it used tears them down and reports their
counts, which `stage_stats()` sums.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from itertools import islice
from typing import Iterable, Iterator

import ray
from ray.exceptions import RayActorError, RayTaskError, WorkerCrashedError

from factory import cluster
from factory.executors.settings import ExecutorConfig
from factory.executors.stats import StageStats, StageTimeline, since
from factory.records import Record
from factory.stage import Stage

log = logging.getLogger(__name__)
IN_FLIGHT_PER_ACTOR = 2  # one running, one queued: hides the transfer of the next batch


class ResourceError(RuntimeError):
    """The cluster cannot run a stage as configured."""


@ray.remote
class StageWorker:
    """Runs any list of stages; keeps each list (and the models its setup() loaded) by segment id
    until the executor releases it, so one actor serves every phase of a run and pays its imports once."""

    def __init__(self):
        self.segments: dict[str, list[Stage]] = {}
        self.reports: dict[str, list[dict]] = {}  # each stage's report when it arrived here

    def run(self, segment_id: str, stages_ref: list, batch: list[Record]) -> list[Record]:
        if segment_id not in self.segments:
            stages = ray.get(stages_ref[0])  # wrapped in a list: fetched once, here
            self.segments[segment_id], self.reports[segment_id] = stages, [s.report() for s in stages]
        for stage in self.segments[segment_id]:
            batch = stage(batch)
        return batch

    def release(self, segment_ids: list[str]) -> list[tuple[str, dict]]:
        """Tears down and forgets these segments' stages; returns (stage name, what it did here)."""
        done = []
        for segment_id in segment_ids:
            for stage, before in zip(self.segments.pop(segment_id, []), self.reports.pop(segment_id, [])):
                try:
                    stage.release()
                except Exception:  # a failed teardown must not lose the counts or the other stages
                    log.exception("teardown of stage '%s' failed", stage.name)
                done.append((stage.name, since(stage.report(), before)))
        return done

    def held(self) -> list[str]:
        """Ids of the segments whose stages this actor keeps."""
        return list(self.segments)

    def gpu_ids(self) -> list:
        return [str(g) for g in ray.get_gpu_ids()]


@dataclass
class Segment:
    stages: list[Stage]
    num_cpus: float
    num_gpus: float
    batch_size: int
    pool_size: int
    id: str = ""
    ref: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return "+".join(s.name for s in self.stages)

    @property
    def shape(self) -> tuple[float, float]:
        return self.num_cpus, self.num_gpus


def fuse(stages: list[Stage]) -> list[Segment]:
    segments: list[Segment] = []
    for stage in stages:
        r = stage.resources
        last = segments[-1] if segments else None
        if last and (last.num_cpus, last.num_gpus) == (r.num_cpus, r.num_gpus):
            last.stages.append(stage)
            last.pool_size = max(last.pool_size, r.pool_size)
        else:
            segments.append(Segment([stage], r.num_cpus, r.num_gpus, max(1, r.batch_size), max(1, r.pool_size)))
    return segments


class RayExecutor:
    name = "ray"

    def __init__(self, cfg: ExecutorConfig):
        self.cfg = cfg
        self.failures = 0
        self._started_ray = False
        self._pools: dict[tuple[float, float], list] = {}  # by (num_cpus, num_gpus), kept across map()
        self._stats = StageStats()
        self._timeline = StageTimeline()

    def start(self) -> None:
        """Joins the configured cluster, or starts an embedded Ray that `close()` shuts down."""
        self._started_ray = cluster.connect(self.cfg.address, self.cfg.num_cpus, self.cfg.num_gpus) \
            or self._started_ray

    def stage_stats(self) -> dict[str, dict]:
        """Stage name -> {"records", "seconds", "passed", "dropped_<reason>"...}, summed over the
        actors of every finished map (a map's counts arrive when it ends; a dead actor's are lost)."""
        return self._stats.as_dict()

    def timeline(self) -> dict:
        """Records each group of fused stages finished, binned over time, as the driver received
        them (factory.executors.stats.StageTimeline)."""
        return self._timeline.as_dict()

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Kills the actors; shuts Ray down if `start()` started it, else waits (briefly) until Ray
        sees their CPUs and GPUs free, so whatever sizes itself next (a trainer, another executor)
        can use them."""
        freed = self._budget() if self._pools and ray.is_initialized() else None
        for pool in self._pools.values():
            for actor in pool:
                ray.kill(actor)
        self._pools.clear()
        if self._started_ray:
            cluster.disconnect(True)
        elif freed:
            cluster.wait_until_available(freed)
        self._started_ray = False

    # -- placement -----------------------------------------------------------------------------

    def _check_gpus(self, segment: Segment) -> None:
        if segment.num_gpus <= 0:
            return
        deadline = time.monotonic() + self.cfg.gpu_wait_s
        while True:
            have = cluster.total()["GPU"]
            if have >= segment.num_gpus:
                return
            if time.monotonic() >= deadline:
                raise ResourceError(
                    f"stage '{segment.name}' asks for {segment.num_gpus:g} GPU per actor, but the Ray cluster "
                    f"has {have:g} GPUs (waited {self.cfg.gpu_wait_s:g}s, executor.gpu_wait_s). Add GPU nodes, "
                    f"or run it on CPU with <section>.resources.num_gpus=0 (e.g. generate.resources.num_gpus=0).")
            time.sleep(1.0)

    def _budget(self) -> dict[str, float]:
        """CPUs and GPUs this map's actors may hold: what is free, plus what this executor's pools
        hold (those actors are reused, or killed before new ones start), within the cluster's total."""
        budget, most = cluster.available(), cluster.total()
        for (cpus, gpus), pool in self._pools.items():
            budget["CPU"] += cpus * len(pool)
            budget["GPU"] += gpus * len(pool)
        return {kind: min(budget[kind], most[kind]) for kind in budget}

    @staticmethod
    def _pool_sizes(segments: list[Segment], budget: dict[str, float]) -> list[int]:
        """Shrink pools so every actor can start at once: an actor that cannot be placed would
        pend forever and stall the pipeline."""
        sizes = [s.pool_size for s in segments]
        while True:
            actors: dict[tuple[float, float], int] = {}  # by shape: segments of one shape share a pool
            for n, s in zip(sizes, segments):
                actors[s.shape] = max(actors.get(s.shape, 0), n)
            need_cpu = sum(n * cpus for (cpus, _), n in actors.items())
            need_gpu = sum(n * gpus for (_, gpus), n in actors.items())
            fits = need_cpu <= budget["CPU"] + 1e-9 and need_gpu <= budget["GPU"] + 1e-9
            if fits or all(n == 1 for n in sizes):
                return sizes
            i = max(range(len(sizes)), key=lambda j: sizes[j])
            sizes[i] -= 1

    def _actor(self, segment: Segment):
        return StageWorker.options(num_cpus=segment.num_cpus, num_gpus=segment.num_gpus).remote()

    def _pool(self, segment: Segment, size: int) -> list:
        pool = self._pools.setdefault(segment.shape, [])
        while len(pool) < size:
            pool.append(self._actor(segment))
        return pool[:size]

    # -- streaming -----------------------------------------------------------------------------

    def map(self, stages: list[Stage], records: Iterable[Record]) -> Iterator[Record]:
        """Streams records through `stages` on actor pools, yielding in completion order. When the
        map ends or is abandoned, its actors tear its stages down (see `_release`)."""
        self.start()
        segments = fuse(stages)
        for segment in segments:
            self._check_gpus(segment)
        budget = self._budget()  # counted before the kills below, whose resources come back
        for shape in set(self._pools) - {s.shape for s in segments}:  # free what this map won't use
            for actor in self._pools.pop(shape):
                ray.kill(actor)
        for segment in segments:
            segment.id, segment.ref = uuid.uuid4().hex, [ray.put(segment.stages)]
        pools = [self._pool(s, n) for s, n in zip(segments, self._pool_sizes(segments, budget))]
        try:
            yield from self._stream(segments, pools, iter(records))
        finally:
            self._release(segments, pools)

    def _release(self, segments: list[Segment], pools: list[list]) -> None:
        """Has every actor of the map's pools tear down and forget the map's stages (after the
        batches it still runs), and adds what they did to `stage_stats()`."""
        if not ray.is_initialized() or not self._pools:  # closed mid-map: the actors are gone already
            return
        refs = [actor.release.remote([segment.id]) for segment, pool in zip(segments, pools) for actor in pool]
        for ref in refs:
            try:
                for name, counts in ray.get(ref):
                    self._stats.add(name, counts)
            except (RayActorError, WorkerCrashedError, RayTaskError) as exc:
                log.warning("an actor could not release its stages (its counts are lost): %s", exc)

    def _stream(self, segments: list[Segment], pools: list[list], source: Iterator[Record]) -> Iterator[Record]:
        n = len(segments)
        inbox: list[deque] = [deque() for _ in segments]  # (batch, attempt) waiting for an actor
        buffer: list[list[Record]] = [[] for _ in segments]  # records collecting into a batch
        load = [[0] * len(pool) for pool in pools]
        inflight: dict = {}  # ref -> (segment, actor index, batch, attempt, actor)
        # replacements of dead actors, not yet placed: they get no batch until ready, since a
        # cluster that lost a node may have no room for them (the survivors then do the work)
        warming: dict = {}  # readiness ref -> (segment, actor index)
        exhausted = False

        def free_slots(i: int) -> list[int]:
            busy = {a for seg, a in warming.values() if seg == i}
            return [a for a in range(len(load[i])) if a not in busy and load[i][a] < IN_FLIGHT_PER_ACTOR]

        def upstream_idle(i: int) -> bool:
            return exhausted and all(not inbox[j] and not buffer[j] for j in range(i)) and \
                not any(seg < i for seg, *_ in inflight.values())

        try:
            while True:
                while not exhausted and len(inbox[0]) < IN_FLIGHT_PER_ACTOR * len(pools[0]):
                    batch = list(islice(source, segments[0].batch_size))
                    if batch:
                        inbox[0].append((batch, 0))
                    else:
                        exhausted = True
                for i in range(1, n):
                    if buffer[i] and upstream_idle(i):
                        inbox[i].append((buffer[i], 0))
                        buffer[i] = []
                for i in reversed(range(n)):
                    while inbox[i] and (slots := free_slots(i)):
                        a = min(slots, key=load[i].__getitem__)
                        batch, attempt = inbox[i].popleft()
                        seg = segments[i]
                        inflight[pools[i][a].run.remote(seg.id, seg.ref, batch)] = (i, a, batch, attempt, pools[i][a])
                        load[i][a] += 1
                if not inflight:
                    if exhausted and not any(inbox) and not any(buffer):
                        return  # done, even with a replacement still waiting for room
                    if not warming:
                        continue
                [ref], _ = ray.wait([*inflight, *warming], num_returns=1)
                if ref in warming:
                    i, a = warming.pop(ref)
                    try:
                        ray.get(ref)
                    except (RayActorError, WorkerCrashedError):  # died before it was placed: another one
                        warming[self._replace(segments[i], pools[i], a).__ray_ready__.remote()] = (i, a)
                    continue
                i, a, batch, attempt, actor = inflight.pop(ref)
                load[i][a] -= 1
                try:
                    out = ray.get(ref)
                    self._timeline.add(segments[i].name, sum(not r.rejected for r in batch))
                except (RayActorError, WorkerCrashedError, RayTaskError) as exc:
                    if isinstance(exc, (RayActorError, WorkerCrashedError)) and pools[i][a] is actor:
                        # the first of its batches to fail replaces it (its other batches fail too)
                        warming[self._replace(segments[i], pools[i], a).__ray_ready__.remote()] = (i, a)
                    out = self._on_failure(exc, segments[i], batch, attempt, inbox[i])
                for record in out:
                    if record.rejected or i == n - 1:
                        yield record
                    else:
                        buffer[i + 1].append(record)
                if i + 1 < n:
                    size = segments[i + 1].batch_size
                    while len(buffer[i + 1]) >= size:
                        inbox[i + 1].append((buffer[i + 1][:size], 0))
                        buffer[i + 1] = buffer[i + 1][size:]
        finally:  # replacements never placed (no room left on the cluster) leave the pools
            for i, actor in [(i, pools[i][a]) for i, a in warming.values()]:
                if ray.is_initialized():
                    ray.kill(actor)
                pools[i].remove(actor)
                if actor in self._pools.get(segments[i].shape, []):
                    self._pools[segments[i].shape].remove(actor)

    def _replace(self, segment, pool, a):
        """A new actor in the dead one's place (in this map's pool and the shared pools)."""
        dead, pool[a] = pool[a], self._actor(segment)
        shared = self._pools[segment.shape]
        if dead in shared:
            shared[shared.index(dead)] = pool[a]
        return pool[a]

    def _on_failure(self, exc, segment, batch, attempt, inbox) -> list[Record]:
        """A worker died or raised past the stage's own guard: retry, then record the failure."""
        if attempt < self.cfg.max_retries:
            log.warning("stage '%s' failed on a batch (attempt %d), retrying: %s", segment.name, attempt + 1, exc)
            inbox.appendleft((batch, attempt + 1))
            return []
        self.failures += len(batch)
        reason = f"worker_failed:{type(exc).__name__}"
        return [record.reject(reason, segment.name) for record in batch]
