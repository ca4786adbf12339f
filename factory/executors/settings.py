"""The executor's settings (`executor.*`)."""

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
