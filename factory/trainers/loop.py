"""The shared training loop: one loop for every model the factory trains, locally or under Ray
Train, without code changes. A model brings a `Recipe` (its network, batches, loss, held-out
metrics and export); the loop brings everything else: AdamW, warm-up and constant or cosine
learning rate, gradient accumulation and clipping, bf16 autocast on CUDA (fp32 on CPU), EMA
weights, TensorBoard scalars, a progress bar, periodic held-out evaluation, checkpoints that
resume exactly, and the final `save_pretrained` folder (EMA weights when EMA is on).

Read top to bottom: 1. settings, 2. the recipe interface, 3. the loop, 4. pieces of the loop,
5. launch (local or Ray Train).

    recipe = MyRecipe(config)        # config: a dataclass with `loop: LoopConfig`
    metrics = run_training(recipe)   # out/final/ holds the exported model

Exact resume: a checkpoint (factory/trainers/checkpoints.py) holds the weights, optimizer,
scheduler, EMA, step, every rank's RNG states and data position, and the config. A run resumed
from step s computes bit for bit what the run that never stopped computes (same device and
world size), because everything a step draws from is restored, and held-out evaluation runs on
its own seeded RNG that it hands back untouched. Resuming with a config that changes training
(lr, batch, model, data...) is refused naming the keys; keys that only change bookkeeping
(`FREE_KEYS`: steps with a constant schedule, logging, checkpoint cadence, out, device) may change.

Under Ray Train every rank runs this same `train`: rank r draws the batches of
`train_batches(rank=r, world_size=n)`, the model is DDP-wrapped (gloo on CPU), rank 0 evaluates,
writes TensorBoard, checkpoints and the final folder, and each checkpoint is reported to Ray Train
(a barrier all ranks reach at the same steps). `out` must be storage every rank sees.

`out` may be a URL (`s3://bucket/run`, factory/storage.py): checkpoints, final/, metrics.json and
config.yaml are uploaded as whole objects; TensorBoard writes to a local staging folder that is
uploaded at every checkpoint and at the end; resume reads the newest complete checkpoint back.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel

from factory import storage
from factory.config import ConfigError, to_dict
from factory.files import atomic_write
from factory.trainers.checkpoints import (capture_rng, check_resumable, checkpoint_step, latest_checkpoint,
                                          load_model_weights, load_trainer_state, restore_rng, save_checkpoint,
                                          seed_everything)
from factory.trainers.ema import EMA
from factory.trainers.world import World, local_world, ray_world

log = logging.getLogger(__name__)


# 1. settings --------------------------------------------------------------------------------

@dataclass
class LoopConfig:
    """The loop's settings; a recipe's config embeds them as `loop`."""

    out: str = "runs/train"  # checkpoints/, tensorboard/, final/, metrics.json, config.yaml
    steps: int = 1000  # optimizer steps
    batch_size: int = 8  # per rank and micro-step; a step sees batch_size * grad_accum * ranks samples
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.01  # on weights with >= 2 dims (nanoGPT's rule); biases and norms get none
    warmup: int = 0  # steps of linear warm-up
    schedule: str = "constant"  # "constant" | "cosine" (to lr * min_lr_ratio at `steps`)
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0  # max global gradient norm; null: no clipping
    precision: str = "bf16"  # "bf16" (autocast, CUDA only) | "fp32"; CPU always runs fp32
    ema_decay: float | None = None  # e.g. 0.999; null: no EMA
    ema_warmup: bool = True  # decay min(ema_decay, (1+n)/(10+n)) at update n
    eval_every: int = 500  # steps; 0: never
    eval_at_start: bool = True  # also evaluate the initial weights (step 0) of a fresh run
    log_every: int = 10
    checkpoint_every: int = 500  # steps; the last step always gets one
    keep_checkpoints: int = 2
    seed: int = 0
    device: str | None = None  # local executor; null: cuda when present, else cpu
    executor: str = "local"  # "local" (this process) | "ray" (Ray Train TorchTrainer)
    num_workers: int = 1  # Ray Train ranks
    use_gpu: bool | None = None  # Ray Train; null: when the Ray cluster has GPUs (when the run starts)
    max_failures: int = 0  # Ray Train: restarts of the worker group after a failure (each resumes exactly)
    progress: bool | None = None  # a progress bar; null: when stderr is a terminal


# keys (of the recipe's config) that may differ when resuming: they change no weight
FREE_KEYS = {f"loop.{k}" for k in ("out", "eval_every", "eval_at_start", "log_every", "checkpoint_every",
                                   "keep_checkpoints", "device", "executor", "num_workers", "use_gpu", "max_failures",
                                   "progress")}


def check_loop_config(cfg: LoopConfig, prefix: str = "loop.") -> None:
    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"config key '{prefix}{key}' {why}")

    if cfg.executor not in ("local", "ray"):
        raise bad("executor", f"must be 'local' or 'ray', not {cfg.executor!r}")
    if cfg.schedule not in ("constant", "cosine"):
        raise bad("schedule", f"must be 'constant' or 'cosine', not {cfg.schedule!r}")
    if cfg.precision not in ("bf16", "fp32"):
        raise bad("precision", f"must be 'bf16' or 'fp32', not {cfg.precision!r}")
    for key in ("steps", "batch_size", "grad_accum", "keep_checkpoints", "num_workers", "log_every"):
        if getattr(cfg, key) < 1:
            raise bad(key, "must be >= 1")
    for key in ("warmup", "eval_every", "checkpoint_every", "max_failures"):
        if getattr(cfg, key) < 0:
            raise bad(key, "must be >= 0")
    if cfg.ema_decay is not None and not 0.0 < cfg.ema_decay < 1.0:
        raise bad("ema_decay", f"must lie in (0, 1) or be null, not {cfg.ema_decay}")
    if len(cfg.betas) != 2:
        raise bad("betas", "must hold two numbers")


# 2. the recipe interface --------------------------------------------------------------------

class Recipe:
    """What a model brings to the loop. Subclass it and implement the first three methods.

    `config` is the recipe's settings dataclass, with the loop's settings as `config.loop`; it is
    saved with every checkpoint and compared on resume. A recipe must pickle (Ray Train ships it
    to its workers): keep heavy things in `build_model` and `train_batches`, not in `__init__`.
    """

    name = "recipe"
    free_keys: frozenset[str] = frozenset()  # more dotted config keys that may change on resume
    ddp_kwargs: dict[str, Any] = {}  # for DDP under Ray Train, e.g. {"find_unused_parameters": True}

    def __init__(self, config: Any):
        self.config = config

    @property
    def loop(self) -> LoopConfig:
        return self.config.loop

    def build_model(self, device: torch.device) -> torch.nn.Module:
        """The module to train, on `device`. Called once per rank after seeding with `loop.seed`
        (random initialisation must come from torch's RNG). The parameters with `requires_grad`
        now are the ones the optimizer, clipping and EMA handle; frozen parts (`requires_grad=False`)
        are allowed, and a phase of training may freeze some of the trainable ones for a while."""
        raise NotImplementedError

    def train_batches(self, batch_size: int, rank: int, world_size: int, seed: int) -> Iterable[dict[str, Any]]:
        """An endless iterable of batch dicts (tensors on CPU; the loop moves them), rank `rank`'s
        share of the data. For exact resume it should offer one of (checked in this order):
        - `state_dict()` / `load_state_dict(state)`: its position; `load_state_dict` is called on a
          fresh iterable before the first batch is drawn;
        - `start_at(position)`: skip to the `position`-th batch (0-based count of batches drawn);
          may return the iterable to use instead, or None;
        otherwise the loop redraws and drops the batches already seen (correct for any
        deterministic iterable, but slow)."""
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """(scalar loss to minimise, float metrics to log) for one micro-batch at optimizer step
        `step` (0-based). `model` may be DDP-wrapped: run the trainable forward through `model(...)`
        (DDP syncs gradients there) and reach other attributes with `unwrap(model)`. The loss must
        be a mean over the batch, so accumulation matches a bigger batch."""
        raise NotImplementedError

    def evaluate(self, model: torch.nn.Module, device: torch.device) -> dict[str, float]:
        """Held-out metrics (the unwrapped model, EMA weights when EMA is on, eval mode, no grad,
        torch/numpy/python RNGs seeded with `loop.seed`). Rank 0 only."""
        return {}

    def param_groups(self, model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW parameter groups: weight decay on matrices and kernels, none on biases and norms."""
        params = [p for p in model.parameters() if p.requires_grad]
        return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]

    def save_pretrained(self, model: torch.nn.Module, path: Path) -> None:
        """Write `model` (EMA weights when EMA is on) as a loadable folder: config JSON +
        model.safetensors. Generator recipes write what `Generator.from_pretrained` reads."""
        from safetensors.torch import save_model

        path.mkdir(parents=True, exist_ok=True)
        save_model(model, str(path / "model.safetensors"))
        atomic_write(path / "config.json", json.dumps({"recipe": self.name, "config": to_dict(self.config)},
                                                      indent=2, sort_keys=True, default=str))


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The recipe's own module inside a DDP wrapper (or the module itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


# 3. the loop --------------------------------------------------------------------------------

def train(recipe: Recipe, stop_at: int | None = None, world: World | None = None) -> dict[str, Any]:
    """Train `recipe` (resuming from the newest checkpoint), export `out/final/` when `loop.steps`
    are done, and return the run's metrics (also in out/metrics.json; {} on ranks other than 0).
    `stop_at` ends after that step with a checkpoint, as a killed run would."""
    cfg = recipe.loop
    check_loop_config(cfg)
    world = world or local_world(cfg.device)
    out, device = cfg.out, world.device  # out: a local path or a URL
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and cfg.precision == "bf16"
                else nullcontext())

    # the model, optimizer, schedule and EMA (seeded alike on every rank: DDP starts from rank 0's weights anyway)
    seed_everything(cfg.seed)
    raw = recipe.build_model(device).to(device)
    trainable = [p for p in raw.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(f"recipe {recipe.name!r}: build_model returned no trainable parameters")
    opt = torch.optim.AdamW(recipe.param_groups(raw, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas))
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(cfg))
    ema = EMA(raw, cfg.ema_decay, cfg.ema_warmup) if cfg.ema_decay else None

    # resume: the newest checkpoint of out/ or of Ray Train
    step, history, evals, resumed, ranks = 0, [], [], None, None
    with world.reported_checkpoint() as reported:
        source = newest_checkpoint(reported, latest_checkpoint(out))
        if source is not None:
            state = load_trainer_state(source)
            check_resume(recipe, state, world, source)
            load_model_weights(source, raw)
            opt.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if ema is not None:
                ema.load_state_dict(state["ema"])
            step, history, evals, ranks = int(state["step"]), state["history"], state["evals"], state["ranks"]
            resumed = step
            if world.main:
                log.info("%s: resuming %s from step %d", recipe.name, out, step)
    model = world.prepare(raw, recipe.ddp_kwargs)

    # this rank's data and RNG stream (restored to the checkpoint's on resume)
    seed_everything(cfg.seed + world.rank)
    batches = ResumableBatches(recipe.train_batches(cfg.batch_size, world.rank, world.size, cfg.seed),
                               ranks[world.rank]["data"] if ranks is not None else None)
    if ranks is not None:
        restore_rng(ranks[world.rank]["rng"])

    writer = tensorboard(out, step) if world.main else None
    if world.main:
        storage.put_bytes(storage.join(out, "config.yaml"), yaml.safe_dump(to_dict(recipe.config), sort_keys=False))
        log.info("%s: %.2fM trainable of %.2fM parameters, device %s, %d rank(s), batch %d x %d accumulated",
                 recipe.name, sum(p.numel() for p in trainable) / 1e6, sum(p.numel() for p in raw.parameters()) / 1e6,
                 device, world.size, cfg.batch_size, cfg.grad_accum)
        if step == 0 and cfg.eval_every and cfg.eval_at_start:
            evals.append(held_out(recipe, raw, ema, world, autocast, step, writer))
    bar = progress_bar(cfg, step, world)
    started, window = time.monotonic(), Window()
    model.train()
    while step < cfg.steps:
        # one optimizer step: grad_accum micro-batches, gradients synced (DDP) on the last only
        opt.zero_grad(set_to_none=True)
        for micro in range(cfg.grad_accum):
            batch = to_device(next(batches), device)
            last = micro == cfg.grad_accum - 1
            with (model.no_sync() if isinstance(model, DistributedDataParallel) and not last else nullcontext()):
                with autocast:
                    loss, metrics = recipe.loss(model, batch, step)
                (loss / cfg.grad_accum).backward()
            window.add(loss.detach(), metrics)
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip) if cfg.grad_clip else None
        opt.step()
        scheduler.step()
        if ema is not None:
            ema.update(raw)
        step += 1
        bar.update(1)

        if step % cfg.log_every == 0 or step == cfg.steps or step == stop_at:
            row = {"step": step, **window.mean(), "lr": opt.param_groups[0]["lr"],
                   **({"grad_norm": float(grad_norm)} if grad_norm is not None else {})}
            if not math.isfinite(row["loss"]):
                raise FloatingPointError(f"{recipe.name}: loss is {row['loss']} at step {step}")
            history.append(row)
            if writer is not None:
                for k, v in row.items():
                    if k != "step":
                        writer.add_scalar(f"train/{k}", v, step)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            log.debug("step %d %s", step, " ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "step"))
        if world.main and cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
            evals.append(held_out(recipe, raw, ema, world, autocast, step, writer))
        if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.steps or step == stop_at:
            ranks = world.gather({"rng": capture_rng(), "data": batches.state_dict(), "weights": checksum(trainable)})
            if len({r["weights"] for r in ranks}) > 1:  # DDP keeps ranks identical unless its forward is bypassed
                log.warning("%s: the ranks' weights differ at step %d: run the trainable forward through "
                            "`model(...)` in `loss` (DDP syncs gradients there)", recipe.name, step)
            checkpoint = None
            if world.main:
                checkpoint = save_checkpoint(out, step, raw, {
                    "step": step, "recipe": recipe.name, "config": to_dict(recipe.config), "world_size": world.size,
                    "optimizer": opt.state_dict(), "scheduler": scheduler.state_dict(),
                    "ema": ema.state_dict() if ema is not None else None,
                    "ranks": ranks, "history": history, "evals": evals}, cfg.keep_checkpoints)
                if writer is not None:
                    writer.flush()  # on a URL: the scalars so far uploaded beside the checkpoint
            world.report({**(history[-1] if history else {}), **(evals[-1] if evals else {}), "step": step}, checkpoint)
        if step == stop_at:
            break
    bar.close()
    if writer is not None:
        writer.close()
    if not world.main:
        return {}
    metrics = summarize(history, evals, time.monotonic() - started, resumed)
    if step >= cfg.steps:
        metrics["weights"] = export(recipe, raw, ema, storage.join(out, "final"))
    storage.put_bytes(storage.join(out, "metrics.json"), json.dumps(metrics, indent=1))
    return metrics


# 4. pieces of the loop ----------------------------------------------------------------------

def lr_factor(cfg: LoopConfig):
    """Step -> lr multiplier: linear warm-up over `warmup` steps, then constant or a cosine down
    to `min_lr_ratio` at `steps` (nanoGPT's schedule)."""
    def factor(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / (cfg.warmup + 1)
        if cfg.schedule == "constant":
            return 1.0
        ratio = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
        return cfg.min_lr_ratio + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (1.0 - cfg.min_lr_ratio)
    return factor


class ResumableBatches:
    """The recipe's batches with a position the loop can save and restore (see
    `Recipe.train_batches` for the three ways). Iteration starts here, before the loop restores the
    RNG states, so an iterable that draws from the global RNG when it starts (a DataLoader's worker
    seeds) sees the same RNG state in a resumed run as in a fresh one."""

    def __init__(self, source: Iterable[dict[str, Any]], state: dict[str, Any] | None = None):
        how = None if state is None else (
            "state_dict" if hasattr(source, "load_state_dict") and state["source"] is not None else
            "start_at" if hasattr(source, "start_at") else "redraw")
        if how == "state_dict":
            source.load_state_dict(state["source"])
        elif how == "start_at":
            source = source.start_at(state["drawn"]) or source
        self.source, self.iterator, self.drawn = source, iter(source), 0
        if how == "redraw":
            log.warning("train_batches has no state_dict/start_at: redrawing %d batches to resume", state["drawn"])
            for _ in range(state["drawn"]):
                next(self)
        self.drawn = state["drawn"] if state is not None else 0

    def __next__(self) -> dict[str, Any]:
        try:
            batch = next(self.iterator)
        except StopIteration:
            raise RuntimeError(f"train_batches ran out after {self.drawn} batches: it must be endless "
                               "(loop over epochs inside it)") from None
        self.drawn += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        own = self.source.state_dict() if hasattr(self.source, "state_dict") else None
        return {"drawn": self.drawn, "source": own}


class Window:
    """Means of the loss and the recipe's metrics since the last log line (one sync per log)."""

    def __init__(self):
        self.loss, self.count, self.sums = None, 0, {}

    def add(self, loss: torch.Tensor, metrics: dict[str, float]) -> None:
        self.loss = loss.float() if self.loss is None else self.loss + loss.float()
        self.count += 1
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)

    def mean(self) -> dict[str, float]:
        row = {"loss": float(self.loss) / self.count, **{k: v / self.count for k, v in self.sums.items()}}
        self.__init__()
        return row


def checksum(params: list[torch.Tensor]) -> float:
    with torch.no_grad():
        return float(sum(p.double().sum() for p in params))


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in batch):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


@contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Inside: every global RNG seeded with `seed`; after: each exactly as it was before."""
    saved = capture_rng()
    seed_everything(seed)
    try:
        yield
    finally:
        restore_rng(saved)


def held_out(recipe: Recipe, raw: torch.nn.Module, ema: EMA | None, world: World, autocast, step: int,
             writer) -> dict[str, Any]:
    """The recipe's held-out metrics of the weights that would be exported (EMA when on)."""
    with isolated_rng(recipe.loop.seed), torch.no_grad(), autocast, (ema.swapped_in(raw) if ema else nullcontext()):
        raw.eval()
        try:
            metrics = {k: float(v) for k, v in recipe.evaluate(raw, world.device).items()}
        finally:
            raw.train()
    if writer is not None:
        for k, v in metrics.items():
            writer.add_scalar(f"eval/{k}", v, step)
    if metrics:
        log.info("%s step %d: %s", recipe.name, step, " ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    return {"step": step, **metrics}


def check_resume(recipe: Recipe, state: dict[str, Any], world: World, source: Path) -> None:
    if state.get("recipe") != recipe.name:
        raise ConfigError(f"cannot resume from {source}: it was written by recipe {state.get('recipe')!r}, "
                          f"not {recipe.name!r}; use a new `loop.out`")
    if state["world_size"] != world.size:
        raise ConfigError(f"cannot resume from {source}: it was trained on {state['world_size']} rank(s), this run "
                          f"has {world.size} (config keys 'loop.num_workers' / 'loop.executor'); each rank's data "
                          "position would be lost")
    free = set(FREE_KEYS) | set(recipe.free_keys)
    if recipe.loop.schedule == "constant" and state["config"].get("loop", {}).get("schedule") == "constant":
        free.add("loop.steps")  # a constant schedule does not depend on the run's length
    check_resumable(source, state["config"], to_dict(recipe.config), free)


def newest_checkpoint(*candidates: str | Path | None) -> str | Path | None:
    found = [c for c in candidates if c is not None]
    return max(found, key=checkpoint_step) if found else None


def export(recipe: Recipe, raw: torch.nn.Module, ema: EMA | None, final: str) -> str:
    """`recipe.save_pretrained` into `final` (EMA weights when on), complete or absent (locally;
    on object storage its config.json is uploaded last)."""
    with storage.staged_dir(final, last="config.json") as tmp, \
            (ema.swapped_in(raw) if ema is not None else nullcontext()):
        recipe.save_pretrained(raw, tmp)
    return final


def summarize(history: list[dict], evals: list[dict], seconds: float, resumed: int | None) -> dict[str, Any]:
    n, size = len(history), max(1, math.ceil(len(history) / 10))
    curve = [{"steps": [part[0]["step"], part[-1]["step"]], "loss": round(float(np.mean([r["loss"] for r in part])), 6)}
             for part in (history[lo:lo + size] for lo in range(0, n, size))]  # the loss curve in ten means
    return {"steps": history[-1]["step"] if history else 0, "resumed_from": resumed,
            "seconds_this_session": round(seconds, 1), "loss_curve": curve, "evals": evals,
            "last_eval": evals[-1] if evals else {}}


def tensorboard(out: str, step: int):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency; without it the run still trains
        log.warning("tensorboard is not installed: no TensorBoard scalars")
        return None
    if storage.is_url(out):
        return StagedSummaryWriter(storage.join(out, "tensorboard"), purge_step=step or None)
    return SummaryWriter(str(Path(out) / "tensorboard"), purge_step=step or None)  # drop a killed run's later events


class StagedSummaryWriter:
    """A SummaryWriter for a URL: TensorBoard appends to its event files, object stores cannot, so
    they are written to a local staging folder and each is uploaded whole at every flush and at close."""

    def __init__(self, url: str, **kwargs):
        from torch.utils.tensorboard import SummaryWriter

        self.url, self.staging = url, tempfile.mkdtemp(prefix="factory-tensorboard-")
        self.writer = SummaryWriter(self.staging, **kwargs)

    def add_scalar(self, *args, **kwargs) -> None:
        self.writer.add_scalar(*args, **kwargs)

    def flush(self) -> None:
        self.writer.flush()
        for file in sorted(Path(self.staging).iterdir()):
            storage.upload(file, storage.join(self.url, file.name))

    def close(self) -> None:
        self.flush()
        self.writer.close()
        shutil.rmtree(self.staging, ignore_errors=True)


def progress_bar(cfg: LoopConfig, step: int, world: World):
    from tqdm import tqdm

    show = cfg.progress if cfg.progress is not None else sys.stderr.isatty()
    return tqdm(total=cfg.steps, initial=step, disable=not (show and world.main), dynamic_ncols=True, unit="step")


# 5. launch: local or Ray Train --------------------------------------------------------------

def run_training(recipe: Recipe, stop_at: int | None = None) -> dict[str, Any]:
    """Train as `loop.executor` says: in this process, or as `loop.num_workers` Ray Train ranks
    (joining RAY_ADDRESS's cluster, else an embedded Ray: factory/cluster.py). Returns
    out/metrics.json's content."""
    cfg = recipe.loop
    check_loop_config(cfg)
    refuse_out_lost_with_the_job(cfg.out)
    if cfg.executor == "local":
        return train(recipe, stop_at)
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from factory import cluster

    # the ranks' working folders are not this one
    out = cfg.out if storage.is_url(cfg.out) else str(Path(cfg.out).resolve())
    recipe = copy.copy(recipe)
    recipe.config = dataclasses.replace(recipe.config, loop=dataclasses.replace(cfg, out=str(out)))
    started = cluster.connect()
    try:
        # null: the cluster's GPUs, not this process's CUDA: under `ray job submit` the driver runs
        # on the head, which often has no GPU while the workers do
        use_gpu = cfg.use_gpu if cfg.use_gpu is not None else cluster.total()["GPU"] > 0
        trainer = TorchTrainer(ray_worker, train_loop_config={"recipe": recipe, "stop_at": stop_at},
                               scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=use_gpu),
                               run_config=RunConfig(name=recipe.name, storage_path=storage.join(out, "ray"),
                                                    checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
                                                    failure_config=FailureConfig(max_failures=cfg.max_failures)))
        result = trainer.fit()
        if result.error is not None:
            raise result.error
    finally:
        cluster.disconnect(started)
    metrics_file = storage.join(out, "metrics.json")
    if storage.isfile(metrics_file):
        return json.loads(storage.read_text(metrics_file))
    return dict(result.metrics or {})


def refuse_out_lost_with_the_job(out: str) -> None:
    """Under `ray job submit --working-dir DIR`, the driver runs in Ray's temporary copy of DIR (a
    new one for every change of the code, deleted by Ray), so a relative `loop.out` would land in
    that copy: lost after the job, and not found by the next submission to resume from."""
    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")  # set by Ray for a job's driver
    if (job.get("runtime_env") or {}).get("working_dir") and not storage.is_url(out) and not Path(out).is_absolute():
        raise ConfigError(f"config key 'loop.out' is a relative path ({out!r}): inside a `ray job submit "
                          "--working-dir` job it would be written into Ray's temporary copy of the working dir "
                          "and lost; give an absolute path on storage every node reaches, or a URL")


def ray_worker(config: dict[str, Any]) -> None:
    """What each Ray Train rank runs: the same `train`, in a Ray world."""
    train(config["recipe"], stop_at=config.get("stop_at"), world=ray_world())
