"""SyncNet: training steps/s against the batch sampling that feeds them, and inference windows/s
(factory.metrics.sync.sync_scores) of the trained recipe's model and of the S-model, in one run.

    .venv/bin/python bench/syncnet.py [--run OUT] [--steps 10] [--clips 1] [--frames 40] [--config configs/syncnet_cpu.yaml] [--json PATH]

Training uses the recipe's config (model, batch size, all_pairs, lr) on the run's clip store,
randomly initialised: the trainer's own pieces (factory/trainers/syncnet.py `step_batch`, `bce`,
AdamW, gradient clipping), the per-step work of `train()` without its evaluation and checkpoints.
  - train step, steps/s; ratio to sampling the step's batch alone (the loader that feeds it:
    near 1 means the data side is the bottleneck, small means the model is);
  - sync_scores with the recipe's model, windows/s (one window per start frame); ratio to the
    windows/s training sees (batch_size/2 video windows a step);
  - sync_scores with the S-model (syncnet_python's SyncNet, random weights: the same compute as
    the real syncnet_v2.model), windows/s; ratio to the recipe's model.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.common import add_json_flag, demo_run, emit, row  # noqa: E402
from factory.clip_store import ClipStore  # noqa: E402
from factory.clips import load_clip  # noqa: E402
from factory.metrics.sync import sync_scores  # noqa: E402
from factory.models.syncnet import SyncNet  # noqa: E402
from factory.models.syncnet_s import SyncNetS  # noqa: E402
from factory.trainers.syncnet import bce, load_corpus, load_train_config, step_batch  # noqa: E402


def train_rates(cfg, steps: int) -> tuple[float, float]:
    """(train steps/s, batch sampling alone steps/s) on the recipe's corpus."""
    torch.manual_seed(cfg.seed)
    clips, _ = load_corpus(cfg)
    model = SyncNet(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()

    def one(step):
        visual, mel, labels = step_batch(clips, cfg, step)
        loss, _ = bce(model, visual, mel, labels, cfg.all_pairs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()

    one(0)  # warm-up: first-call allocations
    start = time.perf_counter()
    for step in range(1, steps + 1):
        one(step)
    train = steps / (time.perf_counter() - start)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        step_batch(clips, cfg, step)
    return train, steps / (time.perf_counter() - start)


def scoring_rate(model, clips) -> float:
    sync_scores(model, clips[0].frames[:model.window + 4], clips[0].audio)  # warm-up
    windows, start = 0, time.perf_counter()
    for clip in clips:
        sync_scores(model, clip.frames, clip.audio)
        windows += len(clip.frames) - model.window + 1
    return windows / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a finished run whose clip store to use (default: a fresh demo run)")
    parser.add_argument("--config", default=str(ROOT / "configs/syncnet_cpu.yaml"))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--clips", type=int, default=1, help="clips scored by sync_scores, per model")
    parser.add_argument("--frames", type=int, default=40, help="first frames of each scored clip (0: all)")
    add_json_flag(parser)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-syncnet-"))
    run = Path(args.run) if args.run else demo_run(tmp / "demo")
    stores = [str(p) for p in sorted((run / "clips").glob("ingest-*"))]
    cfg = load_train_config(args.config, [f"clip_stores=[{','.join(stores)}]", f"out={tmp / 'syncnet'}"])
    train, sampling = train_rates(cfg, args.steps)
    records = sorted((r for s in stores for r in ClipStore.open(s).records()
                      if r.kind == "clip" and not r.rejected and "clip_path" in r.meta), key=lambda r: r.key)
    clips = [load_clip(r.meta["clip_path"]) for r in records[:args.clips]]
    if args.frames:  # the S-model takes ~0.5 s a window on 2 cores: keep the default run short
        clips = [dataclasses.replace(c, frames=c.frames[:args.frames], audio=c.audio[:args.frames * 640]) for c in clips]
    torch.manual_seed(0)
    with torch.inference_mode():
        recipe = scoring_rate(SyncNet(cfg.model).eval(), clips)
        s_model = scoring_rate(SyncNetS().eval(), clips)
    per_step = cfg.batch_size // 2
    rows = [row(f"train step (batch {cfg.batch_size}, all_pairs={cfg.all_pairs})", train, "steps/s", sampling,
                "its batch sampling alone"),
            row("sync_scores, recipe's SyncNet", recipe, "windows/s", train * per_step, "training windows/s"),
            row("sync_scores, S-model (syncnet_python)", s_model, "windows/s", recipe, "recipe's SyncNet")]
    emit("syncnet", rows, args.json, threads=torch.get_num_threads(), train_steps=args.steps,
         scored_clips=len(clips))


if __name__ == "__main__":
    main()
