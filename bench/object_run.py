"""`factory run` with `out` on local disk against `out` on the local S3 server (moto, its own
process on 127.0.0.1), the same videos and settings in one process, alternating: pairs/s of each,
their ratio, and what the S3 run leaves there (objects per pair, by kind).

    .venv/bin/python bench/object_run.py [--videos 2] [--seconds 6] [--repeats 1] [--executor local] [--json PATH]

Each repeat is a fresh output (a new folder, a new prefix): ingest, pairing, generation, filters,
encoding and the commit all count. The inputs are local files for both runs, so only where the
clip store and the run's output live differs. moto keeps objects in memory and answers on
loopback: a real bucket adds network latency per request, which this does not measure.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import add_json_flag, emit, row  # noqa: E402
from bench.url_loader import moto_process  # noqa: E402
from factory import storage  # noqa: E402
from tests.cli import factory_command, run_args  # noqa: E402
from tests.s3_server import TEST_CREDENTIALS, make_bucket, s3_environment  # noqa: E402

SETTINGS = ("ingest.clip_frames=25", "ingest.clip_stride=25", "write.shard_maxcount=3", "executor.progress=false")


def make_videos(folder: Path, count: int, seconds: float) -> Path:
    from factory.demo import SENTENCES, make_talking_video

    for i in range(count):
        make_talking_video(folder / f"v{i}.mp4", SENTENCES[i % len(SENTENCES)], seconds=seconds, size=256, seed=i)
    return folder


def timed_run(out: str, videos: Path, executor: str, env: dict) -> dict:
    start = time.perf_counter()
    done = subprocess.run(factory_command(*run_args(out, *SETTINGS, f"executor.kind={executor}", videos=videos), "-q"),
                          env=env, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"factory run {out} exited {done.returncode}: {done.stderr[-2000:]}")
    import json

    pairs = json.loads(storage.read_text(storage.join(out, "summary.json")))["pairs_written"]
    return {"seconds": seconds, "pairs": pairs}


def object_kinds(url: str) -> Counter:
    """Objects under the run's prefix by what they are (clip arrays, shard tars, commit records...)."""
    fs, root = storage.url_to_fs(url)
    fs.invalidate_cache()
    kinds = Counter()
    for path in fs.find(root):
        rel = path[len(root.rstrip("/")) + 1:]
        top = rel.split("/", 1)[0]
        kinds["clip arrays" if rel.endswith(".npz") else "clip ledger" if "/videos/" in rel else
              "shard tars" if top == "shards" else "commit records" if top == "commits" else
              "previews" if top == "previews" else "demo input" if top == "demo_input" else "run files"] += 1
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--executor", default="local", choices=["local", "ray"])
    add_json_flag(parser)
    args = parser.parse_args()
    proc, endpoint = moto_process()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-object-run-") as tmp, s3_environment(endpoint):
            videos = make_videos(Path(tmp) / "videos", args.videos, args.seconds)
            bucket = make_bucket("bench-object-run")
            env = {**__import__("os").environ, **TEST_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}
            local, s3 = [], []
            for i in range(args.repeats):  # alternating, so drift in the machine's load hits both
                local.append(timed_run(str(Path(tmp) / f"run-{i}"), videos, args.executor, env))
                s3.append(timed_run(f"{bucket}/run-{i}", videos, args.executor, env))
            kinds = object_kinds(f"{bucket}/run-0")
    finally:
        proc.kill()
        proc.wait()
    best_local, best_s3 = min(local, key=lambda r: r["seconds"]), min(s3, key=lambda r: r["seconds"])
    pairs = best_s3["pairs"]
    ref = best_local["pairs"] / best_local["seconds"]
    rows = [row(f"factory run, out on local disk ({args.executor} executor)", ref, "pairs/s", reference_name="itself"),
            row(f"factory run, out on moto S3 ({args.executor} executor)", pairs / best_s3["seconds"], "pairs/s", ref,
                "out on local disk", objects=sum(kinds.values()),
                objects_per_pair=round(sum(kinds.values()) / max(pairs, 1), 2), by_kind=dict(kinds))]
    emit("object_run", rows, args.json, videos=args.videos, seconds=args.seconds, pairs=pairs,
         local_s=round(best_local["seconds"], 1), s3_s=round(best_s3["seconds"], 1))
    print(f"S3 run: {sum(kinds.values())} objects for {pairs} pairs: " + ", ".join(f"{k} {v}" for k, v in kinds.most_common()))


if __name__ == "__main__":
    main()
