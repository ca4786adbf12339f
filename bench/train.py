"""The dubbers' training (issue 14): can the pair loader keep up, and how fast does each recipe step?

    .venv/bin/python bench/train.py [--run OUT] [--samples 24] [--resolution 256] [--workers 0 2]
                                    [--consume 8] [--recipe-steps 3] [--json PATH]

Measures factory/trainers/pair_data.py's loader (PairDataset + pair_loader: webdataset streaming,
shuffle buffer, decoding both sides, masks, resizing) in segments/s on a finished run (default: a
fresh demo run, bench.common.demo_run), with 0 and 2 loader workers and with the tiny Whisper
encoder's audio features, each against a stated trainer consumption (`--consume`, segments/s per
rank). The issue asks for a loader at least 2x what training consumes. The default consumption
is a planning figure, not measured here: one H100 rank training the 5B DiT editor at 256 px on
25-frame segments, batch 4 at about 2 steps/s, is 8 segments/s.

Then each dubber recipe's training step on its tiny CPU config (configs/dubber_*_cpu.yaml, the
demo pairs, random init: the init_from folders each phase or stage needs are saved from freshly
built models, not trained), side by side in this one process: xdub-stage2 phases 1, 2 and 3 and
flashlips-refine's editor and lip_flow stages. A step is the loop's (factory/trainers/loop.py):
next batch, `recipe.loss`, backward, AdamW; `--recipe-steps` timed after one warm-up step. Each row
gives steps/s of the whole step, and the segments/s its compute alone consumes (batch / compute
time) beside the clean loader's measured rate above: the loader's margin over this trainer.
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
from factory.trainers.pair_data import PairDataConfig, PairDataset, pair_loader  # noqa: E402


def loader_rate(cfg: PairDataConfig, workers: int, samples: int, batch: int,
                encoder=None) -> tuple[float, float, float]:
    """(segments/s, segments per CPU-second of this process, pairs decoded per segment) of the
    training split's loader over `samples` segments after one warm-up batch (imports, worker
    start, the first shard read; it counts towards the last). The second is what one busy core
    delivers whatever else loads the machine, the third how often the decoded-pair cache missed
    (1/3 would be every 77-frame pair decoded once for its three segments; 0 workers only: with
    workers the decoding runs in them)."""
    dataset = PairDataset(cfg, batch_size=batch, audio_encoder=encoder)
    it = iter(pair_loader(dataset, num_workers=workers))
    count = len(next(it)["key"])
    start, cpu = time.perf_counter(), time.process_time()
    while count < samples:
        count += len(next(it)["key"])
    rate, per_cpu = count / (time.perf_counter() - start), count / (time.process_time() - cpu)
    del it  # stops the workers
    return rate, per_cpu, dataset.decodes / count


# 2. the recipes' steps --------------------------------------------------------------------

XDUB, FLASHLIPS = "configs/dubber_xdub_cpu.yaml", "configs/dubber_flashlips_cpu.yaml"


def recipe_rate(config: str, overrides: list[str], steps: int) -> tuple[float, float, int]:
    """(steps/s of whole steps, steps/s of their compute alone, batch size) of `steps` training
    steps after one warm-up step, as the loop runs them (batch, loss, backward, AdamW)."""
    from factory.trainers.dubbers import load_recipe
    from factory.trainers.loop import seed_everything, to_device

    recipe = load_recipe(str(ROOT / config), overrides)
    cfg, device = recipe.loop, torch.device("cpu")
    seed_everything(cfg.seed)
    model = recipe.build_model(device)
    opt = torch.optim.AdamW(recipe.param_groups(model, cfg.weight_decay), lr=cfg.lr)
    batches = iter(recipe.train_batches(cfg.batch_size, 0, 1, cfg.seed))
    model.train()
    whole = compute = 0.0
    for step in range(steps + 1):
        start = time.perf_counter()
        batch = to_device(next(batches), device)
        fetched = time.perf_counter()
        loss, _ = recipe.loss(model, batch, step)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        done = time.perf_counter()
        if step:  # the first step starts the loader and warms the caches
            whole, compute = whole + done - start, compute + done - fetched
    return steps / whole, steps / compute, cfg.batch_size


def recipe_folders(run: Path, tmp: Path) -> list[tuple[str, str, list[str]]]:
    """(row name, config, overrides) per recipe phase/stage; the init_from folders saved here."""
    from factory.trainers.dubbers import load_recipe

    def save(config: str, overrides: list[str], folder: Path) -> Path:
        recipe = load_recipe(str(ROOT / config), overrides)
        recipe.save_pretrained(recipe.build_model(torch.device("cpu")), folder)
        return folder

    common = [f"manifests=[{run}]", f"loop.out={tmp / 'unused'}"]
    rows = [("xdub-stage2 phase 1 (all parameters)", XDUB, [*common, "phase=1"])]
    p1 = save(XDUB, [*common, "phase=1"], tmp / "xdub_p1")
    rows.append(("xdub-stage2 phase 2 (lip expert + SyncNet loss)", XDUB, [*common, "phase=2", f"init_from={p1}"]))
    p2 = save(XDUB, [*common, "phase=2", f"init_from={p1}"], tmp / "xdub_p2")
    rows.append(("xdub-stage2 phase 3 (texture expert + identity loss)", XDUB, [*common, "phase=3", f"init_from={p2}"]))
    if (ROOT / FLASHLIPS).is_file():
        rows.append(("flashlips-refine editor (both directions)", FLASHLIPS, [*common, "stage=editor"]))
        editor = save(FLASHLIPS, [*common, "stage=editor"], tmp / "flashlips_editor")
        rows.append(("flashlips-refine lip_flow (lip-pose flow matching)", FLASHLIPS,
                     [*common, "stage=lip_flow", f"init_from={editor}"]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a finished run (default: a fresh demo run)")
    parser.add_argument("--samples", type=int, default=24, help="segments timed per setting")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--consume", type=float, default=8.0,
                        help="what one training rank consumes, segments/s (see the module docstring)")
    parser.add_argument("--recipe-steps", type=int, default=3, help="timed steps per recipe (0: no recipe rows)")
    add_json_flag(parser)
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = Path(args.run) if args.run else demo_run(Path(tempfile.mkdtemp(prefix="bench-train-")) / "demo")
    # The demo run records an augmentation on every pair (bench.common.demo_run); a factory run
    # draws one for ~5%. Replaying it dominates a pair's decoding, so clean pairs (augment=False)
    # are the usual case and every pair augmented the worst.
    clean = PairDataConfig(manifests=[str(run)], resolution=args.resolution, heldout_share=0.0, augment=False)
    augmented = dataclasses.replace(clean, augment=True)
    consumption = "stated trainer consumption"
    rows = []

    def measure(name: str, cfg: PairDataConfig, workers: int, encoder=None) -> None:
        rate, per_cpu, decodes = loader_rate(cfg, workers, args.samples, args.batch, encoder)
        extra = {} if workers else {"segments_per_cpu_s": round(per_cpu, 3), "decodes_per_segment": round(decodes, 3)}
        rows.append(row(f"pair loader, {name}, {workers} workers, {args.resolution} px", rate, "segments/s",
                        args.consume, consumption, **extra))

    for workers in args.workers:
        measure("clean pairs", clean, workers)
    measure("every pair augmented", augmented, 0)
    from factory.models.audio_features import AudioFeatureConfig, AudioFeatures

    measure("clean + tiny Whisper features", clean, 0, AudioFeatures(AudioFeatureConfig(tiny={}, device="cpu")))
    for r in rows:
        if "segments_per_cpu_s" in r:
            print(f"{r['name']}: {r['segments_per_cpu_s']:.2f} segments per CPU-second, "
                  f"{r['decodes_per_segment']:.2f} pairs decoded per segment")
    loader = next(r["throughput"] for r in rows if r["name"].startswith("pair loader, clean pairs"))
    if args.recipe_steps:
        with tempfile.TemporaryDirectory(prefix="bench-recipes-") as tmp:
            for name, config, overrides in recipe_folders(run, Path(tmp)):
                steps, compute, batch = recipe_rate(config, overrides, args.recipe_steps)
                rows.append(row(f"train step, {name}, tiny CPU config", steps, "steps/s", compute,
                                "its compute alone (no batch fetch)", batch=batch,
                                consumes_segments_per_s=round(batch * compute, 3),
                                loader_margin=round(loader / (batch * compute), 3)))
                print(f"{name}: {steps:.3f} steps/s, compute alone consumes {batch * compute:.2f} segments/s; "
                      f"the clean loader gives {loader:.2f} ({loader / (batch * compute):.2f}x)", flush=True)
    dataset = PairDataset(clean)
    emit("train", rows, args.json, pairs=len(dataset.rows), segments_per_epoch=dataset.sources[0].epoch_length(0),
         segment_frames=clean.segment_frames, batch=args.batch, consume=args.consume)


if __name__ == "__main__":
    main()
