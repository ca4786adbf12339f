"""The dubbers' training input (issue 14): can the pair loader keep up with training?

    .venv/bin/python bench/train.py [--run OUT] [--samples 24] [--resolution 256] [--workers 0 2]
                                    [--consume 8] [--json PATH]

Measures factory/trainers/pair_data.py's loader (PairDataset + pair_loader: webdataset streaming,
shuffle buffer, decoding both sides, masks, resizing) in segments/s on a finished run (default: a
fresh demo run, bench.common.demo_run), with 0 and 2 loader workers and with the tiny Whisper
encoder's audio features, each against a stated trainer consumption (`--consume`, segments/s per
rank). The issue asks for a loader at least 2x what training consumes. The default consumption
is a planning figure, not measured here: one H100 rank training the 5B DiT editor at 256 px on
25-frame segments, batch 4 at about 2 steps/s, is 8 segments/s. Recipe steps/s rows (the
trainers' own consumption, measured) are to be added to this script as the recipes land.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a finished run (default: a fresh demo run)")
    parser.add_argument("--samples", type=int, default=24, help="segments timed per setting")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--consume", type=float, default=8.0,
                        help="what one training rank consumes, segments/s (see the module docstring)")
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
    dataset = PairDataset(clean)
    emit("train", rows, args.json, pairs=len(dataset.rows), segments_per_epoch=dataset.sources[0].epoch_length(0),
         segment_frames=clean.segment_frames, batch=args.batch, consume=args.consume)


if __name__ == "__main__":
    main()
