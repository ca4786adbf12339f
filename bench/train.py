"""The dubbers' training (issue 14): does the pair loader keep up (>= 2x), and how fast does each recipe step?

    .venv/bin/python bench/train.py [--quick] [--run OUT] [--copies 4] [--samples 24] [--workers 2]
                                    [--resolution 256] [--gpu-consume 8] [--recipe-steps 3] [--json PATH]

Everything is measured in this one process, on one corpus: a finished run (default: a fresh demo
run, bench.common.demo_run) whose shards are listed `--copies` times under new names, so the loader's
cache of decoded pairs (DECODED_BYTES per process) cannot hold the corpus across epochs and every
pair is decoded about once per epoch, as on a real corpus (`decodes_per_segment` says so).

1. Each dubber recipe on its tiny CPU config (configs/dubber_*_cpu.yaml; random init: the
   init_from folders a phase or stage needs are saved from freshly built models): its consumption
   is batch x steps/s of the step's compute alone (loss, backward, AdamW after the batch is in
   hand; `--recipe-steps` after one warm-up step), and its loader is the one the recipe itself
   builds (`recipe.train_batches(...).dataset`: its resolution, segment length, audio encoder),
   timed alone with 0 and `--workers` loader workers, and with 0 on clean pairs (the demo run
   records an augmentation on every pair, whose replay dominates; a factory run draws one for ~5%).
   A row's ratio is loader / consumption: the issue asks for >= 2. Both run single-threaded (torch.set_num_threads(1)): the ratio is that of
   one core each; on this shared 2-core machine the workers' rate is bounded by the cores left.
2. The loader at `--resolution` (256 px: the GPU recipes'), clean pairs, every pair augmented, and
   with the tiny Whisper's features, against a GPU rank's consumption that is ASSUMED, not measured
   here (`--gpu-consume`, default 8 segments/s: one H100 rank training the 5B DiT editor at 256 px
   on 25-frame segments, batch 4 at ~2 steps/s). The bench prints what such a rank needs (2x that)
   and how many loader processes the measured segments per CPU-second make that.

Rows report segments/s (wall) and, with 0 workers, segments per CPU-second of this process (what
one busy core delivers whatever else loads the machine), its ratio to the reference
(`per_cpu_ratio`: the steadier one on a loaded machine) and pairs decoded per segment.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.common import add_json_flag, demo_run, emit, row  # noqa: E402
from factory.trainers.pair_data import PairDataConfig, PairDataset, manifest_path, pair_loader  # noqa: E402

XDUB, FLASHLIPS = "configs/dubber_xdub_cpu.yaml", "configs/dubber_flashlips_cpu.yaml"


# 1. the corpus --------------------------------------------------------------------------------

def widened_run(run: Path, copies: int, out: Path) -> Path:
    """A manifest listing each of the run's shards `copies` times (symlinks under new names; no
    sample table, so the index is read from the shards): `copies` x the pairs, each decoded for
    itself. The demo run's 7 pairs alone would sit in the loader's cache of decoded pairs."""
    manifest = json.loads(Path(manifest_path(run)).read_text())
    manifest.pop("table", None)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    entries = []
    for k in range(copies):
        for entry in manifest["shardlist"]:
            url = f"shards/copy{k}-{Path(entry['url']).name}"
            (out / url).symlink_to(Path(run, entry["url"]).resolve())
            entries.append({**entry, "url": url})
    manifest["shardlist"] = entries
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


# 2. the loader --------------------------------------------------------------------------------

def loader_rate(dataset: PairDataset, workers: int, samples: int) -> dict[str, float]:
    """segments/s of the dataset's loader over `samples` segments after one warm-up batch
    (imports, worker start, the first shard read; it counts towards the last); with 0 workers also
    segments per CPU-second of this process and pairs decoded per segment."""
    it = iter(pair_loader(dataset, num_workers=workers))
    next(it)
    decodes, start, cpu = dataset.decodes, time.perf_counter(), time.process_time()
    timed = 0
    while timed < samples:
        timed += len(next(it)["key"])
    out = {"rate": timed / (time.perf_counter() - start)}
    if not workers:
        out |= {"segments_per_cpu_s": round(timed / (time.process_time() - cpu), 3),
                "decodes_per_segment": round((dataset.decodes - decodes) / timed, 3)}
    del it  # stops the workers
    return out


# 3. the recipes' steps --------------------------------------------------------------------------

def recipe_rate(recipe, steps: int) -> tuple[float, float, int]:
    """(steps/s of whole steps, steps/s of their compute alone, batch size) of `steps` training
    steps after one warm-up step, as the loop runs them (batch, loss, backward, AdamW)."""
    from factory.trainers.loop import seed_everything, to_device

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


def recipe_rows(corpus: Path, tmp: Path, quick: bool) -> list[tuple[str, str, list[str]]]:
    """(row name, config, overrides) per recipe phase/stage; the init_from folders saved here."""
    from factory.trainers.dubbers import load_recipe

    def save(config: str, overrides: list[str], folder: Path) -> Path:
        recipe = load_recipe(str(ROOT / config), overrides)
        recipe.save_pretrained(recipe.build_model(torch.device("cpu")), folder)
        return folder

    common = [f"manifests=[{corpus}]", f"loop.out={tmp / 'unused'}"]
    rows = [("xdub-stage2 phase 1 (all parameters)", XDUB, [*common, "phase=1"])]
    if not quick:
        p1 = save(XDUB, [*common, "phase=1"], tmp / "xdub_p1")
        rows.append(("xdub-stage2 phase 2 (lip expert + SyncNet loss)", XDUB, [*common, "phase=2", f"init_from={p1}"]))
        p2 = save(XDUB, [*common, "phase=2", f"init_from={p1}"], tmp / "xdub_p2")
        rows.append(("xdub-stage2 phase 3 (texture expert + identity loss)", XDUB,
                     [*common, "phase=3", f"init_from={p2}"]))
    if (ROOT / FLASHLIPS).is_file():
        rows.append(("flashlips-refine editor (both directions)", FLASHLIPS, [*common, "stage=editor"]))
        if not quick:
            editor = save(FLASHLIPS, [*common, "stage=editor"], tmp / "flashlips_editor")
            rows.append(("flashlips-refine lip_flow (lip-pose flow matching)", FLASHLIPS,
                         [*common, "stage=lip_flow", f"init_from={editor}"]))
    return rows


def data_key(recipe) -> str:
    """What the recipe's loader depends on: its data settings and whether it encodes audio."""
    dataset = recipe.train_batches(recipe.loop.batch_size, 0, 1, recipe.loop.seed).dataset
    cfg = {k: v for k, v in vars(dataset.cfg).items() if k != "manifests"}
    return json.dumps([cfg, dataset.batch_size, dataset.audio_encoder is not None], sort_keys=True, default=str)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a few minutes: 12 segments a setting, 1 timed step, xdub phase 1 and the flashlips editor")
    parser.add_argument("--run", help="a finished run (default: a fresh demo run)")
    parser.add_argument("--copies", type=int, default=4, help="times each shard is listed (see the docstring)")
    parser.add_argument("--samples", type=int, default=24, help="segments timed per loader setting")
    parser.add_argument("--workers", type=int, default=2, help="loader workers of the second loader row")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--gpu-consume", type=float, default=8.0,
                        help="ASSUMED segments/s one GPU training rank consumes (see the docstring)")
    parser.add_argument("--recipe-steps", type=int, default=3, help="timed steps per recipe (0: no recipe rows)")
    add_json_flag(parser)
    args = parser.parse_args()
    if args.quick:
        args.samples, args.recipe_steps = min(args.samples, 12), min(args.recipe_steps, 1)
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    run = Path(args.run) if args.run else demo_run(tmp / "demo")
    corpus = widened_run(run, args.copies, tmp / "corpus")
    rows = []

    def loader_rows(name: str, dataset_for, reference: float, reference_name: str, workers_only_0=False) -> list[dict]:
        out = []
        for workers in [0] if workers_only_0 else dict.fromkeys([0, args.workers]):
            got = loader_rate(dataset_for(), workers, args.samples)
            extra = {k: v for k, v in got.items() if k != "rate"}
            if extra and reference:  # robust to the machine's other load: one busy core's rate over the reference
                extra["per_cpu_ratio"] = round(extra["segments_per_cpu_s"] / reference, 3)
            out.append(row(f"pair loader, {name}, {workers} workers", got["rate"], "segments/s", reference,
                           reference_name, **extra))
            print(f"{out[-1]['name']}: {got['rate']:.2f} segments/s"
                  + (f", {extra['segments_per_cpu_s']:.2f} per CPU-second, {extra['decodes_per_segment']:.2f} "
                     "pairs decoded per segment" if extra else "")
                  + (f"; {got['rate'] / reference:.2f}x {reference_name}" if reference else "")
                  + (f" ({extra['per_cpu_ratio']:.2f}x per CPU-second)" if "per_cpu_ratio" in extra else ""), flush=True)
        return out

    # 1. each recipe: its compute's consumption, then its own loader against it
    if args.recipe_steps:
        from factory.trainers.dubbers import load_recipe

        measured: dict[str, list[dict]] = {}  # recipes with the same data settings share one loader measurement
        with tempfile.TemporaryDirectory(prefix="bench-recipes-") as folders:
            for name, config, overrides in recipe_rows(corpus, Path(folders), args.quick):
                recipe = load_recipe(str(ROOT / config), overrides)
                steps, compute, batch = recipe_rate(recipe, args.recipe_steps)
                consumes = batch * compute
                rows.append(row(f"train step, {name}, tiny CPU config", steps, "steps/s", compute,
                                "its compute alone (no batch fetch)", batch=batch,
                                consumes_segments_per_s=round(consumes, 3)))
                print(f"{name}: {steps:.3f} steps/s, compute alone {compute:.3f} steps/s x batch {batch} "
                      f"= {consumes:.2f} segments/s consumed", flush=True)
                key = data_key(recipe)
                data = recipe.train_batches(batch, 0, 1, recipe.loop.seed).dataset.cfg
                label = f"{name.split(' (')[0]}'s data ({data.resolution} px, {data.segment_frames} frames)"
                if key not in measured:
                    own = lambda: recipe.train_batches(batch, 0, 1, recipe.loop.seed).dataset  # noqa: E731
                    measured[key] = loader_rows(label, own, consumes, f"{name}'s consumption")
                    ds = own()  # the same loader on clean pairs: the demo run augments every pair, a factory run ~5%
                    measured[key] += loader_rows(
                        f"{label}, clean pairs",
                        lambda: PairDataset(dataclasses.replace(ds.cfg, augment=False), batch_size=ds.batch_size,
                                            audio_encoder=ds.audio_encoder), consumes, f"{name}'s consumption",
                        workers_only_0=True)
                    rows.extend(measured[key])
                else:  # the same loader as an earlier row: its measured rates against this consumption
                    for r in measured[key]:
                        extra = {k: r[k] for k in ("segments_per_cpu_s", "decodes_per_segment") if k in r}
                        if extra:
                            extra["per_cpu_ratio"] = round(extra["segments_per_cpu_s"] / consumes, 3)
                        rows.append(row(f"{r['name']} vs {name}", r["throughput"], "segments/s", consumes,
                                        f"{name}'s consumption", **extra))
                        print(f"  {r['name']}: {r['throughput'] / consumes:.2f}x this consumption"
                              + (f" ({extra['per_cpu_ratio']:.2f}x per CPU-second)" if extra else ""), flush=True)

    # 2. the GPU recipes' resolution, against an assumed GPU rank
    clean = PairDataConfig(manifests=[str(corpus)], resolution=args.resolution, heldout_share=0.0, augment=False)
    augmented = dataclasses.replace(clean, augment=True)
    assumed = "ASSUMED GPU rank consumption, not measured"
    gpu_rows = loader_rows(f"clean pairs, {args.resolution} px", lambda: PairDataset(clean, batch_size=args.batch),
                           args.gpu_consume, assumed)
    rows.extend(gpu_rows)
    rows.extend(loader_rows(f"every pair augmented, {args.resolution} px",
                            lambda: PairDataset(augmented, batch_size=args.batch), args.gpu_consume, assumed,
                            workers_only_0=True))
    from factory.models.audio_features import AudioFeatureConfig, AudioFeatures

    encoder = AudioFeatures(AudioFeatureConfig(tiny={}, device="cpu"))
    rows.extend(loader_rows(f"clean + tiny Whisper features, {args.resolution} px",
                            lambda: PairDataset(clean, batch_size=args.batch, audio_encoder=encoder),
                            args.gpu_consume, assumed, workers_only_0=True))
    per_core = gpu_rows[0]["segments_per_cpu_s"]
    need = 2 * args.gpu_consume
    print(f"A GPU rank consuming {args.gpu_consume:g} segments/s (assumed) needs >= {need:g} from its loader: at "
          f"{per_core:.2f} clean segments per CPU-second, about {math.ceil(need / per_core)} busy loader cores "
          f"(workers) per rank at {args.resolution} px, before audio features (the recipe computes them in the "
          "loader: the tiny encoder's cost is the row above; a full-size Whisper's on CPU is far larger)", flush=True)
    dataset = PairDataset(clean)
    emit("train", rows, args.json, pairs=len(dataset.rows), copies=args.copies,
         segments_per_epoch=dataset.sources[0].epoch_length(0), segment_frames=clean.segment_frames,
         batch=args.batch, gpu_consume_assumed=args.gpu_consume, gpu_needs_segments_per_s=need,
         loader_cores_per_gpu_rank=math.ceil(need / per_core))


if __name__ == "__main__":
    main()
