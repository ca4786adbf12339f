"""Starting Ray or joining a cluster, in one place: the Ray executor uses it, and so will the
trainers' Ray Train jobs, so every part of the factory meets Ray the same way.

    started = connect(address, num_cpus, num_gpus)
    ...
    disconnect(started)  # shuts down only a Ray this process started
"""

from __future__ import annotations

import os
import time

import ray

from factory import embedded_ray


def connect(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> bool:
    """Joins the cluster at `address` (or RAY_ADDRESS, as under `ray job submit`), else starts an
    embedded Ray sized by `num_cpus` / `num_gpus` (None: what the machine has). Does nothing if
    Ray is already initialised in this process.

    Returns True when it started an embedded Ray, which the caller must `disconnect(True)`.
    """
    if ray.is_initialized():
        return False
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, log_to_driver=True)
        return False
    embedded_ray.start(num_cpus, num_gpus)  # a private Ray: loopback only, in the factory's own folder
    return True


def disconnect(started: bool) -> None:
    """Shuts Ray down if `connect` started it; a joined cluster (or a caller's own Ray) stays up."""
    if started:
        embedded_ray.stop()


def available() -> dict[str, float]:
    """CPUs and GPUs free for new actors right now (others' actors, e.g. a Ray Train job, hold the
    rest). Ray's view lags a little behind actors just started or killed."""
    free = ray.available_resources()
    return {kind: free.get(kind, 0.0) for kind in ("CPU", "GPU")}


def wait_until_available(want: dict[str, float], timeout_s: float = 10.0) -> bool:
    """Waits until Ray reports at least `want` ({"CPU": n, "GPU": n}) free, or `timeout_s` passed
    (then False): killed actors free their resources a moment later than `ray.kill` returns."""
    deadline = time.monotonic() + timeout_s
    while True:
        free = available()
        if all(free.get(kind, 0.0) >= n - 1e-9 for kind, n in want.items()):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def total() -> dict[str, float]:
    """CPUs and GPUs the cluster has, in use or not."""
    resources = ray.cluster_resources()
    return {kind: resources.get(kind, 0.0) for kind in ("CPU", "GPU")}
