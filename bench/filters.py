"""Per-filter throughput on CPU (pairs/s), every filter on the same pairs in one run.

    .venv/bin/python bench/filters.py [--run OUT] [--pairs 8] [--json PATH]

Pairs are read back from a finished run (default: a fresh demo run), clean (augment=False). Each
stage is set up once (model loading is not timed) and then times `stage(batch)` on the same
77-frame pairs. Each filter's ratio is to re-tracking the same pairs (MediaPipe on both sides),
the stage every pair passes before the filters.
The VLM row uses a tiny random Qwen2.5-VL built offline: it measures the code path (sampling,
processor, batched generate, parsing), not a real 3B/7B model, which needs a GPU.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import add_json_flag, demo_run, emit, row  # noqa: E402
from augment.stage import AugmentConfig, AugmentStage  # noqa: E402
from factory.payload import PairMedia  # noqa: E402
from factory.records import Record  # noqa: E402
from factory.stages.track import TrackStage  # noqa: E402
from filters.identity import IdentityConfig, IdentityFilter  # noqa: E402
from filters.mouth_distance import MouthDistanceConfig, MouthDistanceFilter  # noqa: E402
from filters.vlm_quality import VLMQualityConfig, VLMQualityFilter  # noqa: E402
from manifests.reader import iter_pairs  # noqa: E402


def load_pairs(run: Path, n: int) -> list[Record]:
    records = []
    for sample in iter_pairs(run / "manifest.json", augment=False):
        media = PairMedia(real_frames=sample["real"], syn_frames=sample["syn"], real_tracked=sample["real_landmarks"],
                          syn_tracked=sample["syn_landmarks"], mask=sample["mask"] // 255)
        records.append(Record(sample["key"], "pair", media=media, meta={"fps": 25}))
        if len(records) == n:
            break
    return records


def time_stage(stage, pairs: list[Record], batch: int) -> float:
    stage.ensure_set_up()
    work = [Record(p.key, p.kind, copy.copy(p.media), copy.deepcopy(p.meta)) for p in pairs]
    start = time.perf_counter()
    for i in range(0, len(work), batch):
        stage(work[i:i + batch])
    return len(work) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run")
    parser.add_argument("--pairs", type=int, default=8)
    add_json_flag(parser)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-filters-"))
    run = Path(args.run) if args.run else demo_run(tmp / "demo")
    pairs = load_pairs(run, args.pairs)
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_qwen import build_tiny_qwen

    tiny = build_tiny_qwen(tmp / "tiny_qwen")
    stages = [
        ("re-track landmarks (MediaPipe, both sides)", TrackStage(), 1),
        ("mouth distance (on tracked landmarks)", MouthDistanceFilter(MouthDistanceConfig()), 1),
        ("identity, dlib ResNet (8 frames/side)", IdentityFilter(IdentityConfig()), 1),
        ("VLM quality, tiny random Qwen2.5-VL", VLMQualityFilter(VLMQualityConfig(model_path=str(tiny),
                                                                                max_new_tokens=32)), 4),
        ("augment (share 1.0)", AugmentStage(AugmentConfig(share=1.0), seed=0), 1),
    ]
    print(f"{len(pairs)} pairs of {len(pairs[0].media.real_frames)} frames from {run}")
    rows, track = [], None
    for name, stage, batch in stages:
        rate = time_stage(stage, pairs, batch)
        rows.append(row(name, rate, "pairs/s", track, "re-track landmarks" if track else ""))
        track = track or rate
    emit("filters", rows, args.json, pairs=len(pairs))


if __name__ == "__main__":
    main()
