"""The training reader (manifests/reader.py `iter_pairs`) against raw tar iteration, in one run.

    .venv/bin/python bench/loader.py [--run OUT] [--epochs 2] [--samples N] [--json PATH]

Reads the run's manifest (its first `--samples`) `--epochs` times per variant, samples/s:
  - raw: `wds.WebDataset` over the same shard files, member bytes only (the reference);
  - iter_pairs decode=False (manifest + md5 check, no decoding);
  - iter_pairs decoded, without / with the recorded augmentation replayed, md5 check on / off.
The default demo run records an augmentation on every pair (bench.common.demo_run), so the
augmented rows replay one per sample; a run of your own replays only its augmented share.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import webdataset as wds  # noqa: E402

from bench.common import add_json_flag, demo_run, emit, row  # noqa: E402
from manifests.reader import iter_pairs, shard_urls  # noqa: E402


def rate(make_iter, epochs: int, limit: int | None) -> tuple[float, int]:
    """(samples/s, frames per epoch) over `epochs` passes of the first `limit` samples."""
    n, frames = 0, 0
    start = time.perf_counter()
    for _ in range(epochs):
        for sample in itertools.islice(make_iter(), limit):
            n += 1
            frames += len(sample["real"]) if "real" in sample else 0
    return n / (time.perf_counter() - start), frames // epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a finished run (default: a fresh demo run)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--samples", type=int, help="read only the first N samples a pass (default: all)")
    add_json_flag(parser)
    args = parser.parse_args()
    run = Path(args.run) if args.run else demo_run(Path(tempfile.mkdtemp(prefix="bench-loader-")) / "demo")
    manifest = run / "manifest.json"
    urls = shard_urls(manifest)
    augmented = sum(bool(json.loads(s["meta.json"]).get("augment"))
                    for s in itertools.islice(iter_pairs(manifest, decode=False), args.samples))
    next(iter_pairs(manifest))  # warm-up: imports (av, augment), page cache

    def raw():
        return wds.WebDataset(urls, shardshuffle=False, empty_check=False)

    raw_rate, _ = rate(raw, args.epochs, args.samples)
    variants = [
        ("iter_pairs, no decoding (md5 check)", lambda: iter_pairs(manifest, decode=False)),
        ("iter_pairs decoded, no augmentation, md5 check", lambda: iter_pairs(manifest, augment=False)),
        ("iter_pairs decoded, no augmentation, no check", lambda: iter_pairs(manifest, augment=False, check=False)),
        ("iter_pairs decoded + augmentation, md5 check", lambda: iter_pairs(manifest)),
        ("iter_pairs decoded + augmentation, no check", lambda: iter_pairs(manifest, check=False)),
    ]
    rows = [row("raw tar iteration (wds.WebDataset)", raw_rate, "samples/s")]
    decoded = None
    for name, make in variants:
        samples_s, frames = rate(make, args.epochs, args.samples)
        rows.append(row(name, samples_s, "samples/s", raw_rate, "raw tar iteration"))
        decoded = decoded or frames
    emit("loader", rows, args.json, samples=sum(1 for _ in itertools.islice(raw(), args.samples)),
         augmented=augmented, frames_per_epoch=decoded)


if __name__ == "__main__":
    main()
