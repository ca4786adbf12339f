"""Ingest throughput against its physical bottleneck, and peak memory as the input grows.

    .venv/bin/python bench/ingest.py [--seconds 600] [--short 30] [--json PATH]

1. frames/s of the whole ingest stage vs MediaPipe landmarks alone on the same (pre-decoded)
   frames, measured back to back in one process (target: ratio >= 0.8);
2. peak RSS of ingest (a fresh process each) on a short and a long 720p input (target: <= 3 GiB,
   flat as the input grows).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import add_json_flag, emit, long_720p_video, row  # noqa: E402


def landmarks_only_fps(video: Path, frames: int) -> float:
    from factory.faces.landmarks import FaceLandmarker
    from factory.media.video import iter_frames

    decoded = [rgb for _, rgb in zip(range(frames), (f for _, f in iter_frames(video)))]
    with FaceLandmarker(static=False) as lm:
        lm.detect(decoded[0])
        start = time.perf_counter()
        for rgb in decoded:
            lm.detect(rgb)
        return len(decoded) / (time.perf_counter() - start)


def ingest_fps(video: Path, work: Path) -> tuple[float, int]:
    from factory.stages.ingest import IngestConfig
    from factory.records import Record
    from factory.clip_store import ClipStore
    from factory.stages.ingest import IngestStage

    stage = IngestStage(IngestConfig(max_clips_per_video=1), ClipStore.for_settings(work / "warmup", {}))
    stage([Record("warmup", "video", meta={"source": str(video), "speaker": "s"})])  # imports, model loads
    stage = IngestStage(IngestConfig(), ClipStore.for_settings(work, {}))
    stage.ensure_set_up()  # once per worker, not per frame (the landmarks-only side loads its model untimed too)
    start = time.perf_counter()
    out = stage([Record("bench", "video", meta={"source": str(video), "speaker": "s"})])
    elapsed = time.perf_counter() - start
    from factory.media.video import iter_frames

    n = sum(1 for _ in iter_frames(video))
    return n / elapsed, sum(1 for r in out if r.kind == "clip" and not r.rejected)


def peak_rss_child(video: Path, work: Path) -> dict:
    """Ingest in a fresh process; report its peak RSS (ru_maxrss of the child)."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork + exec.
    code = (f"import sys, re; sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r});"
            "from bench.ingest import ingest_fps; from pathlib import Path;"
            f"fps = ingest_fps(Path({str(video)!r}), Path({str(work)!r}))[0];"
            "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1);"
            "print(fps, hwm)")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    fps, peak_kib = out.stdout.strip().splitlines()[-1].split()
    return {"fps": round(float(fps), 1), "wall_s": round(time.perf_counter() - start, 1),
            "peak_rss_gib": round(int(peak_kib) / 2**20, 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the long input")
    parser.add_argument("--short", type=float, default=30.0)
    add_json_flag(parser)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    short = long_720p_video(tmp / "short.mp4", args.short)
    mp_fps = landmarks_only_fps(short, int(args.short * 25))
    in_fps, clips = ingest_fps(short, tmp / "work0")
    print(f"landmarks only: {mp_fps:.1f} frames/s; ingest: {in_fps:.1f} frames/s ({clips} clips); "
          f"ratio {in_fps / mp_fps:.2f} (target >= 0.8)")
    results = {"landmarks_only_fps": round(mp_fps, 1), "ingest_fps": round(in_fps, 1),
               "ratio": round(in_fps / mp_fps, 3)}
    mid = long_720p_video(tmp / "mid.mp4", args.seconds / 4)
    long = long_720p_video(tmp / "long.mp4", args.seconds)
    results["rss_quarter"] = peak_rss_child(mid, tmp / "work1")
    results["rss_full"] = peak_rss_child(long, tmp / "work2")
    print(f"peak RSS: {args.seconds / 4:.0f}s input {results['rss_quarter']['peak_rss_gib']} GiB, "
          f"{args.seconds:.0f}s input {results['rss_full']['peak_rss_gib']} GiB (target <= 3 GiB, flat)")
    print(json.dumps(results, indent=1))
    rows = [row("ingest, whole stage", in_fps, "frames/s", mp_fps, "MediaPipe landmarks alone"),
            *(row(f"ingest in a fresh process, {s:.0f} s input", results[k]["fps"], "frames/s",
                  peak_rss_mb=round(results[k]["peak_rss_gib"] * 1024, 1))
              for k, s in (("rss_quarter", args.seconds / 4), ("rss_full", args.seconds)))]
    emit("ingest", rows, args.json, clips=clips)


if __name__ == "__main__":
    main()
