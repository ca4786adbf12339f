"""Shard writing: the run's ShardSink (manifests/writer.py) against raw webdataset TarWriter on the
same sample bytes, in one run.

    .venv/bin/python bench/shards.py [--run OUT] [--samples 96] [--maxcount 8] [--json PATH]

The demo run's encoded samples (format 2: mp4s, alpha, landmarks, meta) are copied under new keys
up to `--samples`. ShardSink writes them as the run does: `.partial` tars of `--maxcount`
samples, fsynced, renamed, md5-summed and recorded in the ledger and shard log. The reference is a
plain `wds.TarWriter` writing the same bytes into one tar, no fsync: the ratio is what the
exactly-once bookkeeping costs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import webdataset as wds  # noqa: E402

from bench.common import add_json_flag, demo_run, emit, row  # noqa: E402
from factory.payload import PairMedia  # noqa: E402
from factory.records import Record  # noqa: E402
from manifests.reader import iter_pairs  # noqa: E402
from manifests.writer import ShardSink  # noqa: E402


def samples(run: Path, count: int) -> list[dict[str, bytes]]:
    """`count` raw samples: the run's, repeated under new keys."""
    raw = [{k: v for k, v in s.items() if not k.startswith("__")}
           for s in iter_pairs(run / "manifest.json", decode=False, check=False)]
    return [{"__key__": f"bench_{i:06d}", **raw[i % len(raw)]} for i in range(count)]


def sink_write(out: Path, batch: list[dict[str, bytes]], maxcount: int) -> float:
    records = [Record(s["__key__"], "pair", media=PairMedia(files={k: v for k, v in s.items() if k != "__key__"}),
                      meta=json.loads(s["meta.json"])) for s in batch]
    start = time.perf_counter()
    sink = ShardSink(out, maxcount, 1_000_000_000)
    for record in records:
        sink.write(record)
    sink.close()
    return time.perf_counter() - start


def raw_write(out: Path, batch: list[dict[str, bytes]]) -> float:
    out.mkdir(parents=True)
    start = time.perf_counter()
    with wds.TarWriter(str(out / "raw.tar")) as writer:
        for sample in batch:
            writer.write(sample)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a finished run to take samples from (default: a fresh demo run)")
    parser.add_argument("--samples", type=int, default=96)
    parser.add_argument("--maxcount", type=int, default=8, help="samples per shard (the demo's write.shard_maxcount)")
    add_json_flag(parser)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-shards-"))
    run = Path(args.run) if args.run else demo_run(tmp / "demo")
    batch = samples(run, args.samples)
    mib = sum(len(v) for s in batch for k, v in s.items() if k != "__key__") / 2**20
    raw_write(tmp / "warmup", batch[:2])
    sink_s, raw_s = [], []
    for i in range(2):  # alternate, so load from other jobs hits both alike
        raw_s.append(raw_write(tmp / f"raw{i}", batch))
        sink_s.append(sink_write(tmp / f"sink{i}", batch, args.maxcount))
    sink_s, raw_s = min(sink_s), min(raw_s)
    n = len(batch)
    rows = [row(f"ShardSink ({args.maxcount}/shard, fsync, ledger)", n / sink_s, "samples/s", n / raw_s, "raw TarWriter"),
            row("ShardSink, bytes", mib / sink_s, "MiB/s", mib / raw_s, "raw TarWriter")]
    emit("shards", rows, args.json, samples=n, mib_per_sample=round(mib / n, 3))


if __name__ == "__main__":
    main()
