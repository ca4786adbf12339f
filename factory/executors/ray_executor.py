"""Ray executor: pools of plain Ray actors, one pool per group of fused stages.

Why actors and not Ray Data: on small machines Ray Data's streaming executor costs most of a core
(measured in ENVIRONMENT.md: 1.04x with two actors vs 1.49x for plain actors on 2 cores), and the
factory's stages are coarse (a whole video, a whole pair), so a simple ray.wait loop keeps every
actor busy. Consecutive stages with the same resources are fused into one actor (like Ray Data's
operator fusion), so a pair's frames cross the object store once.

GPU stages ask Ray for `num_gpus` and use the device Ray assigns (CUDA_VISIBLE_DEVICES is set by
Ray for the actor). A GPU request the cluster can never meet fails fast with a clear message
instead of pending forever.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
import uuid
from dataclasses import dataclass, field
from itertools import islice
from typing import Iterable, Iterator

import ray
from ray.exceptions import RayActorError, RayTaskError, WorkerCrashedError

from factory.executors import ExecutorConfig
from factory.records import Record
from factory.stage import Stage

log = logging.getLogger(__name__)
IN_FLIGHT_PER_ACTOR = 2  # one running, one queued: hides the transfer of the next batch


class ResourceError(RuntimeError):
    """The cluster cannot run a stage as configured."""


@ray.remote
class StageWorker:
    """Runs any list of stages; keeps each list (and the models its setup() loaded) by id, so one
    actor serves every phase of a run and pays its imports once."""

    def __init__(self):
        self.stages: dict[str, list[Stage]] = {}

    def run(self, segment_id: str, stages_ref: list, batch: list[Record]) -> list[Record]:
        if segment_id not in self.stages:
            self.stages[segment_id] = ray.get(stages_ref[0])  # wrapped in a list: fetched once, here
        for stage in self.stages[segment_id]:
            batch = stage(batch)
        return batch

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

    def start(self) -> None:
        if ray.is_initialized():
            return
        if self.cfg.address or os.environ.get("RAY_ADDRESS"):
            ray.init(address=self.cfg.address, log_to_driver=True)  # a cluster, e.g. under `ray job submit`
        else:  # embedded: a private local Ray, dashboard off (and never on a public interface)
            ray.init(num_cpus=self.cfg.num_cpus, num_gpus=self.cfg.num_gpus, include_dashboard=False,
                     dashboard_host="127.0.0.1", log_to_driver=True)
            self._started_ray = True

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for pool in self._pools.values():
            for actor in pool:
                ray.kill(actor)
        self._pools.clear()
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False

    # -- placement -----------------------------------------------------------------------------

    def _check_gpus(self, segment: Segment) -> None:
        if segment.num_gpus <= 0:
            return
        deadline = time.monotonic() + self.cfg.gpu_wait_s
        while True:
            have = ray.cluster_resources().get("GPU", 0)
            if have >= segment.num_gpus:
                return
            if time.monotonic() >= deadline:
                raise ResourceError(
                    f"stage '{segment.name}' asks for {segment.num_gpus:g} GPU per actor, but the Ray cluster "
                    f"has {have:g} GPUs (waited {self.cfg.gpu_wait_s:g}s, executor.gpu_wait_s). Add GPU nodes, "
                    f"or run it on CPU with <section>.resources.num_gpus=0 (e.g. generate.resources.num_gpus=0).")
            time.sleep(1.0)

    def _pool_sizes(self, segments: list[Segment]) -> list[int]:
        """Shrink pools so every actor can start at once: an actor that cannot be placed would
        pend forever and stall the pipeline."""
        resources = ray.cluster_resources()
        cpus, gpus = resources.get("CPU", 1), resources.get("GPU", 0)
        sizes = [s.pool_size for s in segments]
        while True:
            need_cpu = sum(n * s.num_cpus for n, s in zip(sizes, segments))
            need_gpu = sum(n * s.num_gpus for n, s in zip(sizes, segments))
            if (need_cpu <= cpus and need_gpu <= gpus + 1e-9) or all(n == 1 for n in sizes):
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
        self.start()
        segments = fuse(stages)
        for segment in segments:
            self._check_gpus(segment)
        for shape in set(self._pools) - {s.shape for s in segments}:  # free what this map won't use
            for actor in self._pools.pop(shape):
                ray.kill(actor)
        for segment in segments:
            segment.id, segment.ref = uuid.uuid4().hex, [ray.put(segment.stages)]
        pools = [self._pool(s, n) for s, n in zip(segments, self._pool_sizes(segments))]
        yield from self._stream(segments, pools, iter(records))

    def _stream(self, segments: list[Segment], pools: list[list], source: Iterator[Record]) -> Iterator[Record]:
        n = len(segments)
        inbox: list[deque] = [deque() for _ in segments]  # (batch, attempt) waiting for an actor
        buffer: list[list[Record]] = [[] for _ in segments]  # records collecting into a batch
        load = [[0] * len(pool) for pool in pools]
        inflight: dict = {}  # ref -> (segment, actor index, batch, attempt)
        exhausted = False

        def upstream_idle(i: int) -> bool:
            return exhausted and all(not inbox[j] and not buffer[j] for j in range(i)) and \
                not any(seg < i for seg, *_ in inflight.values())

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
                while inbox[i] and min(load[i]) < IN_FLIGHT_PER_ACTOR:
                    a = min(range(len(load[i])), key=load[i].__getitem__)
                    batch, attempt = inbox[i].popleft()
                    seg = segments[i]
                    inflight[pools[i][a].run.remote(seg.id, seg.ref, batch)] = (i, a, batch, attempt)
                    load[i][a] += 1
            if not inflight:
                if exhausted and not any(inbox) and not any(buffer):
                    return
                continue
            [ref], _ = ray.wait(list(inflight), num_returns=1)
            i, a, batch, attempt = inflight.pop(ref)
            load[i][a] -= 1
            try:
                out = ray.get(ref)
            except (RayActorError, WorkerCrashedError, RayTaskError) as exc:
                out = self._on_failure(exc, segments[i], pools[i], a, batch, attempt, inbox[i])
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

    def _on_failure(self, exc, segment, pool, a, batch, attempt, inbox) -> list[Record]:
        """A worker died or raised past the stage's own guard: retry, then record the failure."""
        if isinstance(exc, (RayActorError, WorkerCrashedError)):
            dead, pool[a] = pool[a], self._actor(segment)  # the dead actor's replacement
            shared = self._pools[segment.shape]
            if dead in shared:
                shared[shared.index(dead)] = pool[a]
        if attempt < self.cfg.max_retries:
            log.warning("stage '%s' failed on a batch (attempt %d), retrying: %s", segment.name, attempt + 1, exc)
            inbox.appendleft((batch, attempt + 1))
            return []
        self.failures += len(batch)
        reason = f"worker_failed:{type(exc).__name__}"
        return [record.reject(reason, segment.name) for record in batch]
