"""Executors run a list of stages over records. Same stages, same results, in-process or on Ray.

Interface: `map(stages, records) -> iterator of records` (streaming; Ray yields in completion
order; when a map ends or is abandoned its stages are torn down), `stage_stats()` (stage name ->
{"records", "seconds", "passed", "dropped_<reason>"...} over every map so far), `close()`, and
`failures` (records given up on after worker deaths).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ExecutorConfig:
    kind: str = "ray"  # "ray" or "local" (in-process, for debugging and tests)
    address: str | None = None  # None: embedded Ray (or the cluster of a `ray job submit`)
    num_cpus: int | None = None  # embedded Ray only
    num_gpus: int | None = None  # embedded Ray only
    gpu_wait_s: float = 30.0  # how long a GPU stage waits for a GPU to appear before failing
    max_retries: int = 2  # per batch, when a worker dies
    progress: bool = True


def make_executor(cfg: ExecutorConfig):
    if cfg.kind == "local":
        from factory.executors.local import LocalExecutor

        return LocalExecutor()
    if cfg.kind == "ray":
        from factory.executors.ray_executor import RayExecutor

        return RayExecutor(cfg)
    raise ValueError(f"unknown executor '{cfg.kind}' (config key executor.kind: 'ray' or 'local')")
