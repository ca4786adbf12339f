"""Every registered generator on the same demo pairs (same crop size), frames/s, in one run.

    .venv/bin/python bench/generators.py [--run OUT] [--pairs 4] [--repeats 2] [--json PATH]

Generators are discovered from the registry (factory.generators.base: the modules of
factory/generators/ and the `factory.generators` entry points), so a learned generator added later
is benched too when it builds with its default settings and no weights; one that needs weights is
skipped with a note. Per generator, on the same prepared inputs (clip loading, registration and
masks untimed):
  - render alone (`generate_batch`), ratio to the compositing step every generator shares
    (factory.faces.masks.composite on the same frames);
  - the whole generate stage (load, register, mask, render, composite), ratio to its render alone:
    the share of the stage's time the generator itself takes (near 1: the generator is the
    bottleneck).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import add_json_flag, demo_run, emit, row  # noqa: E402
from factory.faces.masks import composite  # noqa: E402
from factory.generators import generator_names  # noqa: E402
from factory.records import Record  # noqa: E402
from factory.stages.generate import GenerateConfig, GenerateStage  # noqa: E402


def pair_records(store: Path, n: int) -> list[Record]:
    """Up to `n` pairs of a clip store: each clip re-dubbed by the next clip of its video (as
    bench/storage.py pairs them), with the clip before it as motion frames."""
    by_video = defaultdict(list)
    for path in sorted(store.rglob("clips/*.npz")):
        if ".occlusion-" not in path.name:
            by_video[path.stem.rsplit("_c", 1)[0]].append(path)
    records = []
    for clips in by_video.values():
        for i, (a, b) in enumerate(zip(clips, clips[1:] + clips[:1])):
            meta = {"clip_path": str(a), "alt_clip_path": str(b)} | ({"motion_clip_path": str(clips[i - 1])} if i else {})
            records += [Record(a.stem, "pair", meta=meta)] if a != b else []
    return records[:n]


def fresh(records: list[Record]) -> list[Record]:
    return [Record(r.key, r.kind, meta=dict(r.meta)) for r in records]


def timed(fn, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def bench_generator(name: str, records: list[Record], repeats: int) -> list[dict]:
    stage = GenerateStage(GenerateConfig(generator=name))
    stage.ensure_set_up()  # model building and loading are not timed
    prepared = [stage.prepare(r) for r in fresh(records)]
    inputs = [inp for inp, _, _ in prepared]
    frames = sum(len(inp.real_frames) for inp in inputs)
    stage.generator.generate_batch(inputs[:1])  # warm-up (lazy imports, first-call allocations)
    render_s = timed(lambda: stage.generator.generate_batch(inputs), repeats)
    rendered = stage.generator.generate_batch(inputs)
    composite_s = timed(lambda: [composite(inp.real_frames[:len(out)], out, alpha[:len(out)])
                                 for (inp, _, alpha), out in zip(prepared, rendered)], repeats)
    stage_s = timed(lambda: stage(fresh(records)), repeats)
    render = frames / render_s
    return [row(f"{name}: render (generate_batch)", render, "frames/s", frames / composite_s, "compositing"),
            row(f"{name}: generate stage (load+mask+render+composite)", frames / stage_s, "frames/s", render,
                "its render alone")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a finished run to take clips from (default: a fresh demo run)")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    add_json_flag(parser)
    args = parser.parse_args()
    run = Path(args.run) if args.run else demo_run(Path(tempfile.mkdtemp(prefix="bench-generators-")) / "demo")
    records = pair_records(run / "clips", args.pairs)
    rows, skipped = [], {}
    for name in generator_names():
        try:
            rows += bench_generator(name, records, args.repeats)
        except Exception as exc:  # e.g. a learned generator whose config needs weights (ConfigError)
            skipped[name] = f"{type(exc).__name__}: {exc}"
            print(f"skipped {name}: {skipped[name]}")
    emit("generators", rows, args.json, pairs=len(records), skipped=skipped)


if __name__ == "__main__":
    main()
