"""Sample storage, the format before issue 10 against format 2, on the same in-memory pairs in
one run: bytes per pair, decode frames/s (as the training reader decodes a sample), and how far
the decoded frames are from the in-memory ones (background: syn vs real where alpha == 0).

    .venv/bin/python bench/storage.py [--clips DIR] [--pairs 6] [--repeats 2] [--json PATH]

Pairs are made here from a clip store (default: the embedded demo, ingested into a temporary
folder): each clip re-dubbed by the next clip of its video with the `transplant` generator.
Format 1: real.mp4 + syn.mp4, whole frames, H.264 yuv444p CRF 18. Format 2 (manifests.sample):
real.mp4 yuv420p + the synthetic region only + lossless alpha, syn rebuilt from decoded real.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.common import add_json_flag, emit, row  # noqa: E402
from factory.media.encode import mp4_bytes  # noqa: E402
from factory.records import Record  # noqa: E402
from factory.stages.encode import pair_files  # noqa: E402
from factory.stages.generate import GenerateConfig, GenerateStage  # noqa: E402
from manifests.reader import _decode_mp4, decode_sample  # noqa: E402
from manifests.sample import read_alpha, rebuild_syn  # noqa: E402

VIDEO = ("real.mp4", "syn.mp4", "syn_region.mp4", "alpha.npz")  # what differs between the formats


def demo_clip_store(tmp: Path) -> Path:
    subprocess.run([sys.executable, "-m", "factory.cli", "ingest", "configs/demo.yaml", "executor.kind=local",
                    "executor.progress=false", f"out={tmp / 'run'}", f"clip_store={tmp / 'clips'}"],
                   check=True, cwd=ROOT)
    return tmp / "clips"


def make_pairs(store: Path, n: int) -> list[Record]:
    by_video = defaultdict(list)
    for path in sorted(store.rglob("clips/*.npz")):
        if ".occlusion-" not in path.name:
            by_video[path.stem.rsplit("_c", 1)[0]].append(path)
    records = []
    for clips in by_video.values():  # the alternative: the next clip; motion frames: the one before
        for i, (a, b) in enumerate(zip(clips, clips[1:] + clips[:1])):
            meta = {"clip_path": str(a), "alt_clip_path": str(b)} | ({"motion_clip_path": str(clips[i - 1])} if i else {})
            records += [Record(a.stem, "pair", meta=meta)] if a != b else []
    records = records[:n]
    stage = GenerateStage(GenerateConfig(settings={"colour_match": True}))
    stage.setup()
    out = stage.process(records)
    for r in out:  # storage does not depend on re-tracking: ingest's landmarks stand in
        r.media.real_tracked = r.media.syn_tracked = r.media.clip_landmarks
    return out


def format1(m) -> dict[str, bytes]:
    return {"real.mp4": mp4_bytes(m.real_frames, 25, 18, "yuv444p"), "syn.mp4": mp4_bytes(m.syn_frames, 25, 18, "yuv444p")}


def decode1(files):
    return _decode_mp4(files["syn.mp4"]), _decode_mp4(files["real.mp4"])


def decode2(files, box, ramp=None):
    if ramp is None:
        out = decode_sample({"__key__": "k", **files, "meta.json": b'{"storage": {"syn_box": %s}}' % str(box).encode()})
        return out["syn"], out["real"]
    real = _decode_mp4(files["real.mp4"])
    return rebuild_syn(real, _decode_mp4(files["syn_region.mp4"]), read_alpha(files["alpha.npz"]), box, ramp), real


def measure(name, pairs, encoded, decode, repeats):
    sizes = [sum(len(v) for k, v in files.items() if k in VIDEO) for files, _ in encoded]
    start = time.perf_counter()
    for _ in range(repeats):
        decoded = [decode(files, box) for files, box in encoded]
    fps = repeats * sum(len(p.media.real_frames) for p in pairs) / (time.perf_counter() - start)
    bg, inside, real_err = [], [], []
    for p, (syn, real) in zip(pairs, decoded):
        a = p.media.alpha
        d = np.abs(syn.astype(int) - real.astype(int))
        bg.append((d[a == 0].mean(), d[a == 0].max()))
        e = np.abs(syn.astype(int) - p.media.syn_frames.astype(int))
        inside.append((e[a > 0].mean(), e[(a > 0) & (a < 32)].mean()))
        real_err.append(np.abs(real.astype(int) - p.media.real_frames.astype(int)).mean())
    bg, inside = np.array(bg), np.array(inside)
    print(f"{name:<22} {np.mean(sizes) / 1024:8.1f} KiB {fps:8.1f} {bg[:, 0].mean():9.3f} {bg[:, 1].max():6.0f}"
          f" {inside[:, 0].mean():10.2f} {inside[:, 1].mean():10.2f} {np.mean(real_err):9.2f}")
    return np.mean(sizes), fps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", help="a clip store folder (default: ingest the demo)")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    add_json_flag(parser)
    args = parser.parse_args()
    store = Path(args.clips) if args.clips else demo_clip_store(Path(tempfile.mkdtemp(prefix="bench-storage-")))
    pairs = make_pairs(store, args.pairs)
    print(f"{len(pairs)} pairs of {pairs[0].media.real_frames.shape} frames")
    old = [(format1(p.media), None) for p in pairs]
    new = [pair_files(p.media, 25, 16000, 18) for p in pairs]
    new = [(files, stored["storage"]["syn_box"]) for files, stored in new]
    print(f"{'format':<22} {'bytes/pair':>12} {'dec fps':>8} {'bg mean':>9} {'bg max':>6} {'syn err in':>10}"
          f" {'.. a<32':>10} {'real err':>9}")
    size1, fps1 = measure("1: yuv444p syn+real", pairs, old, lambda f, _: decode1(f), args.repeats)
    size2, fps2 = measure("2: yuv420p + region", pairs, new, decode2, args.repeats)
    measure("2, hard switch (ramp 1)", pairs, new, lambda f, b: decode2(f, b, ramp=1), 1)
    print(f"format 2 / format 1: bytes {size2 / size1:.2f}x, decode frames/s {fps2 / fps1:.2f}x "
          "(bg: |syn - real| where alpha == 0; errors in levels against the in-memory frames)")
    whole = np.mean([sum(map(len, files.values())) for files, _ in new]) / 1024
    motion = [len(files["motion.mp4"]) / 1024 for files, _ in new if "motion.mp4" in files]
    landmarks = np.mean([len(files["real_landmarks.npy"]) * 2 for files, _ in new]) / 1024
    print(f"format 2 whole sample: {whole:.1f} KiB (of which both sides' float32 landmarks {landmarks:.1f} KiB, "
          f"as in format 1; motion.mp4, new: {np.mean(motion) if motion else 0:.1f} KiB, in {len(motion)} of {len(new)})")
    emit("storage", [row("sample format 2 decode", fps2, "frames/s", fps1, "format 1 decode"),
                     row("sample format 2 video bytes", size2 / 1024, "KiB/pair", size1 / 1024, "format 1")],
         args.json, pairs=len(pairs))


if __name__ == "__main__":
    main()
