"""The generators' clip loader (factory/trainers/clip_data.py): samples/s and peak RSS at 64 and
128 px, with and without the tiny Whisper encoder, on demo clips stored at ingest's 256 px.

Each setting runs in a fresh process, so its peak RSS is its own.

    .venv/bin/python bench/clip_loader.py [--samples 48] [--workers 0]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(store: str, resolution: int, audio: bool, samples: int, workers: int) -> tuple[float, float, float]:
    """(samples/s, peak RSS in MiB, peak RSS before the first sample) of one setting, in this
    (fresh) process: the difference is what loading costs beyond torch and the models."""
    import torch

    from factory.trainers.clip_data import ClipDataConfig, ClipDataset, data_loader

    torch.set_num_threads(1)
    encoder = None
    if audio:
        from factory.models.audio_features import AudioFeatureConfig, AudioFeatures

        encoder = AudioFeatures(AudioFeatureConfig(tiny={}, device="cpu"))
    cfg = ClipDataConfig(clip_stores=[store], resolution=resolution, heldout_share=0, segment_stride=8)
    ds = ClipDataset(cfg, batch_size=4, epochs=None, audio_encoder=encoder)
    before = rss_mib()
    it = iter(data_loader(ds, num_workers=workers))
    next(it)  # warm-up: imports, worker start, first file reads
    count, start = 0, time.perf_counter()
    while count < samples:
        count += len(next(it)["key"])
    rate = count / (time.perf_counter() - start)
    del it  # stops the loader workers before this process exits
    peak = rss_mib()
    if workers:
        peak += resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # largest worker
    return rate, peak, before


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=48)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--measure", nargs=3, metavar=("STORE", "RESOLUTION", "AUDIO"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:  # one setting, in this fresh process
        store, resolution, audio = args.measure
        print(json.dumps(measure(store, int(resolution), bool(int(audio)), args.samples, args.workers)))
        return

    from factory.demo import SENTENCES
    from tests.syncnet_corpus import demo_clip_store

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store = demo_clip_store(Path(tmp), sentences=SENTENCES[:2], crop=256)
        clips = len(store.records())
        print(f"clip store: {clips} clips of 77 frames at 256 px ({time.perf_counter() - t0:.1f} s to build)")
        print(f"{'resolution':>10} {'audio enc':>9} {'samples/s':>10} {'peak RSS MiB':>13} {'before loading':>14}  (workers={args.workers})")
        rates = {}
        for resolution in (64, 128):
            for audio in (False, True):
                child = subprocess.run([sys.executable, __file__, "--measure", str(store.path), str(resolution),
                                        str(int(audio)), "--samples", str(args.samples), "--workers", str(args.workers)],
                                       check=True, capture_output=True, text=True)
                rate, peak, before = json.loads(child.stdout.strip().splitlines()[-1])
                rates[resolution, audio] = rate
                print(f"{resolution:>10} {'tiny' if audio else '-':>9} {rate:>10.1f} {peak:>13.0f} {before:>14.0f}")
        print(f"ratio 64/128 px (no encoder): {rates[64, False] / rates[128, False]:.2f}; "
              f"cost of the tiny encoder at 64 px: {rates[64, False] / rates[64, True]:.2f}x")


if __name__ == "__main__":
    main()
