"""`factory train-syncnet CONFIG`: train a SyncNet (factory/models/syncnet.py) on clip stores.

Read top to bottom: 1. settings, 2. data (clips -> lower-face frames and mels in memory, split by
video into train and held-out), 3. batches, 4. the loop (checkpoints, TensorBoard, held-out
accuracy), 5. checkpoints.

Windows: a window is `model.frames` consecutive frames of a clip (start v) with the mel of the
same time (positive), or the mel of the same clip at v + d, |d| >= `min_negative_offset`
(an offset negative, LatentSync's "wrong window of the same video"). A batch holds the same
video windows twice, once with each kind, so it is balanced and the negatives differ from the
positives only in timing: the net cannot learn identity or content instead of sync.

Exact resume: the batch of step s is drawn from a generator seeded by (seed, s) alone, and a
checkpoint holds model, optimizer, step, metric history and config, so a run resumed from step s
computes the same losses as one that never stopped.

`out` and `clip_stores` are local paths or URLs (factory/storage.py): checkpoints use the shared
loop's layout and commit protocol (factory/trainers/checkpoints.py: complete or absent, trainer.pt
last on object storage), `final/`, metrics.json and config.yaml are each written whole, and
TensorBoard events are staged locally and uploaded (loop.tensorboard).

Recipe: LatentSync trains the cosine head with batch 256-1024 at lr 1e-5; a small batch sticks
at loss 0.693 (ln 2: the cosine collapses to 0.5). On CPU (configs/syncnet_cpu.yaml, measured
there): `model.loss=scaled_cosine` (a learned scale and bias on the cosine), `all_pairs` (every
window against every mel of the batch, SigLIP's sigmoid loss, so a batch of 32 gives 16 x 32
pairs instead of 32), `model.center_frames` (the visual net sees the mouth move, not the face),
a tiny model and lr 1e-3. Without the last two it stays at 0.693 for hundreds of steps.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from factory import storage
from factory.trainers import checkpoints
from factory.trainers.clip_sources import clip_records, video_split
from factory.clips import load_clip
from factory.config import ConfigError, build, config_yaml, to_dict
from factory.models.syncnet import SyncNet, SyncNetConfig, log_mel, lower_half, mel_window

log = logging.getLogger(__name__)


# 1. settings --------------------------------------------------------------------------------

@dataclass
class SyncNetTrainConfig:
    out: str = "runs/syncnet"  # a local folder or a URL: checkpoints/, tensorboard/, final/, metrics.json, config.yaml
    clip_stores: list[str] = field(default_factory=list)  # folders (or URLs) written by `factory ingest`
    seed: int = 0
    executor: str = "local"  # "local" (this process) | "ray" (Ray Train TorchTrainer, one worker)
    device: str | None = None  # null: cuda when present, else cpu
    model: SyncNetConfig = field(default_factory=SyncNetConfig)
    steps: int = 20000
    batch_size: int = 256  # windows per step: half positives, half offset negatives of the same windows
    lr: float = 1e-5
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    min_negative_offset: int = 3  # frames between a negative's audio and its video window
    all_pairs: bool = False  # also score every video window against every other mel in the batch
    heldout_share: float = 0.2  # share of videos held out (by video, so no window leaks)
    heldout_windows: int = 256  # held-out windows scored (each as a positive and a negative)
    eval_every: int = 500
    log_every: int = 50
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    max_clips: int | None = None


def load_train_config(path: str | Path | None, overrides=()) -> SyncNetTrainConfig:
    from factory.config import apply_overrides, read_yaml

    cfg = build(SyncNetTrainConfig, apply_overrides(read_yaml(path), overrides))
    if cfg.executor not in ("local", "ray"):
        raise ConfigError(f"config key 'executor': 'local' or 'ray', not {cfg.executor!r}")
    if cfg.batch_size < 2 or cfg.batch_size % 2:
        raise ConfigError("config key 'batch_size' must be an even number >= 2")
    if cfg.executor == "ray":
        from factory.storage import refuse_urls

        # ray_train.run_with_ray_train resolves its run folder with Path(): a URL would become a
        # local `s3:` folder (the shared loop's launch keeps URLs; this one does not yet)
        refuse_urls({"out": cfg.out}, "the SyncNet trainer under Ray Train (executor=ray)")
    return cfg


# 2. data ------------------------------------------------------------------------------------

@dataclass
class ClipWindows:
    key: str
    video: np.ndarray  # (T, 3, size/2, size) float16 lower faces in [-1, 1]
    mel: np.ndarray  # (n_mels, steps) float32


def load_corpus(cfg: SyncNetTrainConfig) -> tuple[list[ClipWindows], list[ClipWindows]]:
    """(train, held-out) clips of the configured stores, held-out by whole videos."""
    records = clip_records(cfg.clip_stores, cfg.max_clips)
    heldout = video_split(sorted({r.meta["video_key"] for r in records}), cfg.heldout_share, cfg.seed)
    train, held = [], []
    for r in records:
        clip = load_clip(r.meta["clip_path"])
        if len(clip.frames) < cfg.model.frames + cfg.min_negative_offset:
            continue
        item = ClipWindows(r.key, lower_half(clip.frames, cfg.model).astype(np.float16), log_mel(clip.audio, cfg.model))
        (held if r.meta["video_key"] in heldout else train).append(item)
    if not train:
        raise ConfigError("no training clips long enough for a window")
    return train, held


# 3. batches ---------------------------------------------------------------------------------

def sample_windows(clips: list[ClipWindows], count: int, cfg: SyncNetTrainConfig,
                   rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`count` video windows, each paired twice: with its own mel (label 1) and with an offset mel
    of the same clip (label 0). Returns visual (n, 3*frames, h, w), mel (2n, 1, n_mels, steps):
    the n positives then the n negatives, and labels (2n,)."""
    m, frames = cfg.model, cfg.model.frames
    weights = np.array([len(c.video) - frames + 1 for c in clips], np.float64)
    picks = rng.choice(len(clips), count, p=weights / weights.sum())
    visual, pos, neg = [], [], []
    for i in picks:
        clip = clips[i]
        last = len(clip.video) - frames
        v = int(rng.integers(0, last + 1))
        shifts = [d for d in range(-last, last + 1) if abs(d) >= cfg.min_negative_offset and 0 <= v + d <= last]
        d = int(rng.choice(shifts))
        visual.append(clip.video[v:v + frames].reshape(-1, *clip.video.shape[2:]))
        pos.append(mel_window(clip.mel, v, m))
        neg.append(mel_window(clip.mel, v + d, m))
    mel = torch.from_numpy(np.stack(pos + neg))[:, None]
    labels = torch.cat([torch.ones(count), torch.zeros(count)])
    return torch.from_numpy(np.stack(visual)).float(), mel, labels


def step_batch(clips, cfg: SyncNetTrainConfig, step: int):
    return sample_windows(clips, cfg.batch_size // 2, cfg, np.random.default_rng([cfg.seed, step]))


def bce(model: SyncNet, visual: torch.Tensor, mel: torch.Tensor, labels: torch.Tensor,
        all_pairs: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, probabilities of the given (window, mel) pairs): BCE on the cosine similarity
    (through the model's head). Each video window is embedded once and compared with its positive
    and its offset negative. With `all_pairs` (SigLIP's sigmoid loss: BCE on the scaled cosine of
    every pair in the batch), every other mel of the batch is a negative too, positives and
    negatives weighted equally: n^2 more pairs per step, which small batches need."""
    v = model.embed_visual(visual)
    a = model.embed_audio(mel)
    reps = len(mel) // len(visual)
    if model.config.loss == "cosine":
        p = model.probability(v.repeat(reps, 1), a)
        if not all_pairs:
            return F.binary_cross_entropy(p, labels), p
        probs = ((v @ a.T).clamp(1e-6, 1 - 1e-6))
        logits = torch.log(probs) - torch.log1p(-probs)
    else:
        p = torch.sigmoid(model.logits(v.repeat(reps, 1), a))
        if not all_pairs:
            return F.binary_cross_entropy_with_logits(model.logits(v.repeat(reps, 1), a), labels), p
        logits = model.logit_scale.exp() * (v @ a.T) + model.logit_bias
    target = torch.zeros_like(logits)
    idx = torch.arange(len(v), device=v.device)
    target[idx, idx] = labels[:len(v)]  # the window's own mel (a positive)
    weight = torch.where(target > 0, 0.5 / max(1, int(target.sum().item())), 0.5 / max(1, int((target == 0).sum().item())))
    return F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="sum"), p


@torch.no_grad()
def evaluate(model: SyncNet, clips: list[ClipWindows], cfg: SyncNetTrainConfig, device: str,
             chunk: int = 64) -> dict[str, float]:
    """Held-out loss and accuracy (p > 0.5 <=> in sync) over a fixed seeded set of windows, and
    the pair accuracy (a window's positive scored above its negative)."""
    if not clips:
        return {}
    visual, mel, labels = sample_windows(clips, cfg.heldout_windows, cfg, np.random.default_rng([cfg.seed, 2**31]))
    n = len(visual)
    model.eval()
    losses, pos, neg = 0.0, [], []
    for i in range(0, n, chunk):
        j = min(n, i + chunk)
        both = torch.cat([mel[i:j], mel[n + i:n + j]])
        y = torch.cat([labels[i:j], labels[n + i:n + j]])
        loss, p = bce(model, visual[i:j].to(device), both.to(device), y.to(device))
        losses += loss.item() * len(p)
        pos.append(p[:j - i].cpu())
        neg.append(p[j - i:].cpu())
    model.train()
    pos, neg = torch.cat(pos), torch.cat(neg)
    accuracy = (float((pos > 0.5).float().sum()) + float((neg <= 0.5).float().sum())) / (2 * n)
    return {"heldout_loss": losses / (2 * n), "heldout_accuracy": accuracy,
            "heldout_pair_accuracy": float((pos > neg).float().mean())}


# 4. the loop --------------------------------------------------------------------------------

Reporter = Callable[[dict[str, Any], Path | None], None]  # (metrics, local checkpoint folder or None)


def train(cfg: SyncNetTrainConfig, reporter: Reporter | None = None, stop_at: int | None = None) -> dict[str, Any]:
    """Train (resuming from the newest checkpoint in cfg.out) and write `out/final/`, a
    `save_pretrained` folder for `ingest.syncnet_path`. `stop_at` ends early after that step
    (checkpoint written), as a killed run would. Returns the final metrics."""
    from factory.devices import pick_device
    from factory.trainers.loop import tensorboard

    out = cfg.out  # a local path or a URL: only storage.* touches it
    device = cfg.device or pick_device()
    torch.manual_seed(cfg.seed)
    storage.put_bytes(storage.join(out, "config.yaml"), config_yaml(cfg))
    train_clips, held = load_corpus(cfg)
    model = SyncNet(cfg.model).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, history = 0, []
    latest = latest_checkpoint(out)
    if latest is not None:
        step, history = load_checkpoint(latest, model, opt, cfg)
        log.info("resuming %s from step %d", out, step)
    writer = tensorboard(out, step)  # staged and uploaded for a URL; a killed run's later events dropped
    log.info("syncnet: %d train clips, %d held-out clips, %.2fM parameters, device %s", len(train_clips), len(held),
             sum(p.numel() for p in model.parameters()) / 1e6, device)
    model.train()
    started, metrics = time.monotonic(), {}
    while step < cfg.steps:
        visual, mel, labels = step_batch(train_clips, cfg, step)
        loss, p = bce(model, visual.to(device), mel.to(device), labels.to(device), cfg.all_pairs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        row = {"step": step, "loss": loss.item(), "train_accuracy": float(((p > 0.5) == (labels.to(p.device) > 0.5)).float().mean())}
        if step % cfg.eval_every == 0 or step == cfg.steps:
            row.update(evaluate(model, held, cfg, device))
        history.append(row)
        if writer is not None:
            for k, v in row.items():
                if k != "step":
                    writer.add_scalar(k, v, step)
        if step % cfg.log_every == 0 or "heldout_accuracy" in row:
            log.info("step %d loss %.4f %s", step, row["loss"],
                     " ".join(f"{k} {v:.3f}" for k, v in row.items() if k.startswith("heldout")))
        ckpt = None
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or step == stop_at:
            ckpt = save_checkpoint(out, step, model, opt, history, cfg)
            if writer is not None:
                writer.flush()  # on a URL: the scalars so far uploaded beside the checkpoint
        if reporter is not None and (ckpt is not None or "heldout_accuracy" in row):
            # a checkpoint on object storage stays there (resuming reads out's own checkpoints)
            reporter(row, Path(ckpt) if ckpt is not None and not storage.is_url(ckpt) else None)
        if step == stop_at:
            break
    if writer is not None:
        writer.close()
    metrics = summarize(history, time.monotonic() - started)
    if step >= cfg.steps:
        final = storage.join(out, "final")
        # complete or absent: renamed from final.partial locally, config.json uploaded last remotely
        with storage.staged_dir(final, last="config.json") as tmp:
            model.cpu().save_pretrained(tmp)
        metrics["weights"] = final
    storage.put_bytes(storage.join(out, "metrics.json"), json.dumps(metrics, indent=1))
    return metrics


def summarize(history: list[dict], seconds: float) -> dict[str, Any]:
    evals = [r for r in history if "heldout_accuracy" in r]
    curve, n = [], len(history)
    for lo in range(0, n, max(1, math.ceil(n / 10))):  # the loss curve in ten means
        part = history[lo:lo + max(1, math.ceil(n / 10))]
        curve.append({"steps": [part[0]["step"], part[-1]["step"]], "loss": round(float(np.mean([r["loss"] for r in part])), 4)})
    return {"steps": history[-1]["step"] if history else 0, "seconds_this_session": round(seconds, 1),
            "loss_curve": curve, "evals": evals, **({k: v for k, v in evals[-1].items() if k.startswith("heldout")} if evals else {})}


# 5. checkpoints: the shared loop's (factory/trainers/checkpoints.py) -------------------------------

def save_checkpoint(out: str, step: int, model: SyncNet, opt, history: list[dict], cfg: SyncNetTrainConfig) -> str:
    """out/checkpoints/step-NNNNNNNN/{model.safetensors, trainer.pt}, complete or absent; the
    newest `keep_checkpoints` are kept."""
    return checkpoints.save_checkpoint(out, step, model, {
        "step": step, "optimizer": opt.state_dict(), "history": history, "config": to_dict(cfg)}, cfg.keep_checkpoints)


def latest_checkpoint(out: str) -> str | None:
    return checkpoints.latest_checkpoint(out)


def load_checkpoint(path: str, model: SyncNet, opt, cfg: SyncNetTrainConfig) -> tuple[int, list[dict]]:
    state = checkpoints.load_trainer_state(path)
    saved_model = state["config"].get("model")
    if saved_model != to_dict(cfg.model):
        raise ConfigError(f"{storage.redact(str(path))} was trained with another model config; use a new `out` "
                          f"(saved {saved_model}, now {to_dict(cfg.model)})")
    # checkpoints written before the shared layout hold the weights in a save_pretrained model/ folder
    old = storage.join(path, "model")
    checkpoints.load_model_weights(old if storage.isfile(storage.join(old, checkpoints.MODEL_FILE)) else path, model)
    opt.load_state_dict(state["optimizer"])
    return int(state["step"]), list(state["history"])


# 6. launch: local or Ray Train ------------------------------------------------------------------

def _ray_worker_loop(config: dict[str, Any]) -> None:
    """What the Ray Train worker runs: the same `train`, reporting to Ray Train."""
    from factory.trainers.ray_train import report

    train(build(SyncNetTrainConfig, config), reporter=report)


def run_training(cfg: SyncNetTrainConfig) -> dict[str, Any]:
    """`factory train-syncnet`: train locally or under Ray Train; returns out/metrics.json's content."""
    if cfg.executor == "local":
        return train(cfg)
    from dataclasses import replace

    from factory.trainers.ray_train import run_with_ray_train

    # as loop.run_training: the worker's working folder is not this one; a URL stays a URL (no Path())
    out = cfg.out if storage.is_url(cfg.out) else str(Path(cfg.out).resolve())
    run_with_ray_train(_ray_worker_loop, to_dict(replace(cfg, out=out)), storage.join(out, "ray"), "syncnet",
                       use_gpu=(cfg.device or "").startswith("cuda") or (cfg.device is None and torch.cuda.is_available()))
    return json.loads(storage.read_text(storage.join(out, "metrics.json")))
