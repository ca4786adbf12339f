"""Ray Train launch for a training loop: TorchTrainer with one worker around the same function
the local executor calls in-process, so both run the same code.

The loop's own checkpoints (in its `out`, which on a cluster must be shared storage) are the
source of truth for resuming; each is also reported to Ray Train (`ray.train.report` with a
`Checkpoint`), so Ray's run folder lists them beside the metrics.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable


def run_with_ray_train(loop: Callable[[dict[str, Any]], dict[str, Any]], config: dict[str, Any], storage: Path,
                       name: str, use_gpu: bool = False) -> dict[str, Any]:
    """Run `loop(config)` as the single Ray Train worker; returns the worker's last reported metrics."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=max(1, os.cpu_count() or 1), include_dashboard=False, log_to_driver=True,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH")) if p)}})
    try:
        trainer = TorchTrainer(loop, train_loop_config=config,
                               scaling_config=ScalingConfig(num_workers=1, use_gpu=use_gpu),
                               run_config=RunConfig(name=name, storage_path=str(Path(storage).resolve())))
        result = trainer.fit()
        if result.error is not None:
            raise result.error
        return dict(result.metrics or {})
    finally:
        if started_here:
            ray.shutdown()


def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
    """Inside a Ray Train worker: metrics (and a checkpoint folder) to Ray Train."""
    import ray.train
    from ray.train import Checkpoint

    clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    ray.train.report(clean, checkpoint=Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None)
