"""The whole factory, in-process vs the Ray executor, side by side in one run.

    .venv/bin/python bench/run.py [--videos 4] [--json PATH]

Same input (demo talking-face videos), same config, fresh output directories; the Ray run is
timed with and without Ray's start-up. Target: Ray with two workers >= 1.4x in-process on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import add_json_flag, emit, row  # noqa: E402
from pipelines.settings import load_factory_config as load_config  # noqa: E402
from factory.demo import make_demo_videos  # noqa: E402
from factory.executors import make_executor  # noqa: E402
from pipelines.pseudo_pairs import run  # noqa: E402


def timed_run(kind: str, videos: Path, out: Path) -> dict:
    cfg = load_config("configs/demo.yaml", ["input.demo=false", f"input.paths=[{videos}]", f"out={out}",
                                            f"executor.kind={kind}", "executor.progress=false"])
    executor = make_executor(cfg.executor)
    start = time.perf_counter()
    if kind == "ray":
        executor.start()
    ready = time.perf_counter()
    summary = run(cfg, executor, progress=False)
    end = time.perf_counter()
    executor.close()
    return {"wall_s": round(end - start, 2), "without_startup_s": round(end - ready, 2),
            "pairs": summary["pairs_written"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=4)
    add_json_flag(parser)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_run_"))
    make_demo_videos(tmp / "videos", count=args.videos)
    local = timed_run("local", tmp / "videos", tmp / "local")
    ray = timed_run("ray", tmp / "videos", tmp / "ray")
    assert local["pairs"] == ray["pairs"], (local, ray)
    print(json.dumps({"local": local, "ray": ray}, indent=1))
    print(f"Ray / in-process speed-up: {local['wall_s'] / ray['wall_s']:.2f}x whole run, "
          f"{local['wall_s'] / ray['without_startup_s']:.2f}x excluding Ray start-up (target >= 1.4x)")
    pairs = local["pairs"]
    emit("run", [row("whole run, Ray executor (with start-up)", pairs / ray["wall_s"], "pairs/s",
                     pairs / local["wall_s"], "in-process run"),
                 row("whole run, Ray executor (without start-up)", pairs / ray["without_startup_s"], "pairs/s",
                     pairs / local["wall_s"], "in-process run")], args.json, videos=args.videos)


if __name__ == "__main__":
    main()
