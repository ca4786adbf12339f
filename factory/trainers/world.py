"""Where a training loop runs: this process alone, or one rank of a Ray Train worker group.

The loop asks its `World` for rank, world size and device, wraps its model with `prepare`,
gathers per-rank state with `gather` and reports with `report`; only this file knows whether Ray
Train is around. Under Ray Train the device is the one Ray assigned (`ray.train.torch.get_device`),
the model is wrapped in DDP by `ray.train.torch.prepare_model` (gloo on CPU, NCCL on GPU), and
`report` is `ray.train.report`: a barrier every rank must reach equally often.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch


@dataclass
class World:
    rank: int
    size: int
    device: torch.device
    ray: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def prepare(self, model: torch.nn.Module, ddp_kwargs: dict[str, Any] | None = None) -> torch.nn.Module:
        """The module the loop calls: DDP-wrapped under Ray Train with more than one rank."""
        if not self.ray:
            return model.to(self.device)
        from ray.train.torch import prepare_model

        return prepare_model(model, parallel_strategy_kwargs=ddp_kwargs or None)

    def gather(self, obj: Any) -> list[Any]:
        """`obj` of every rank, in rank order (picklable objects; small ones: RNG and data states)."""
        if self.size == 1:
            return [obj]
        out: list[Any] = [None] * self.size
        torch.distributed.all_gather_object(out, obj)
        return out

    def report(self, metrics: dict[str, Any], checkpoint: str | Path | None) -> None:
        """Metrics (and rank 0's checkpoint folder) to Ray Train; nothing locally."""
        if not self.ray:
            return
        import ray.train
        from ray.train import Checkpoint

        from factory.storage import is_url

        clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        # a checkpoint on object storage stays there (the loop resumes from out's own checkpoints)
        folder = Path(checkpoint) if checkpoint is not None and not is_url(checkpoint) else None
        ray.train.report(clean, checkpoint=Checkpoint.from_directory(str(folder)) if folder else None,
                         checkpoint_dir_name=folder.name if folder else None)

    @contextmanager
    def reported_checkpoint(self) -> Iterator[Path | None]:
        """The newest checkpoint Ray Train holds for this run (a restarted or restored run), as a
        local folder inside the block; None locally or when there is none."""
        checkpoint = None
        if self.ray:
            import ray.train

            checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as folder:
            yield Path(folder)


def local_world(device: str | None) -> World:
    from factory.devices import pick_device

    return World(rank=0, size=1, device=torch.device(device or pick_device()))


def ray_world() -> World:
    """Inside a Ray Train worker. CPU threads follow the CPUs Ray reserved for the worker (two
    workers on a 2-core machine must not each start two threads)."""
    import ray
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        torch.set_num_threads(max(1, int(cpus)))
    return World(rank=context.get_world_rank(), size=context.get_world_size(), device=device, ray=True)
