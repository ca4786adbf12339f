"""The object-store commit protocol (manifests/object_commit.py) against the local writer, on the
same samples in one run: samples/s publishing shards + manifest to local disk (`ShardSink`:
`.partial` tars, fsync, rename, md5, ledger), to `memory://` and to moto's S3 server (its own
process on 127.0.0.1, bench/url_loader.py), and the requests each costs per shard and per pair.

    .venv/bin/python bench/object_commit.py [--samples 64] [--sample-kib 256] [--maxcount 8] [--repeats 3] [--json PATH]

Samples are random bytes (a payload the size of an encoded pair, plus meta.json): encoding is not
what is measured. Each target gets a fresh prefix/folder per repeat; best of `--repeats`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.common import add_json_flag, emit, row  # noqa: E402
from bench.url_loader import moto_process  # noqa: E402
from factory.payload import PairMedia  # noqa: E402
from factory.records import Record  # noqa: E402
from manifests.format import write_manifest  # noqa: E402
from manifests.object_commit import ObjectShardSink  # noqa: E402
from manifests.writer import ShardSink  # noqa: E402
from tests.s3_server import make_bucket, s3_environment  # noqa: E402


def make_records(n: int, kib: int) -> list[Record]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        meta = {"i": i}
        payload = rng.integers(0, 256, kib * 1024, dtype=np.uint8).tobytes()
        files = {"meta.json": json.dumps(meta).encode(), "pair.bin": payload}
        out.append(Record(f"pair-{i:05d}", "pair", media=PairMedia(files=files), meta=meta))
    return out


def local_run(records: list[Record], maxcount: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-objcommit-") as tmp:
        start = time.perf_counter()
        sink = ShardSink(Path(tmp) / "run", maxcount=maxcount, maxsize=10**12)
        for r in records:
            sink.write(r)
        sink.close()
        kept, rejected = sink.shard_lists()
        write_manifest(Path(tmp) / "run" / "manifest.json", kept, {}, {}, rejected=rejected)
        return {"seconds": time.perf_counter() - start, "shards": len(kept) + len(rejected)}


def object_run(prefix: str, records: list[Record], maxcount: int) -> dict:
    start = time.perf_counter()
    sink = ObjectShardSink(prefix, maxcount=maxcount, maxsize=10**12)
    for r in records:
        sink.write(r)
    sink.close()
    sink.write_manifest({}, {})
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "shards": len(sink.records), "calls": dict(sink.store.calls)}


def best(runs: list[dict]) -> dict:
    return min(runs, key=lambda r: r["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--sample-kib", type=int, default=256)
    parser.add_argument("--maxcount", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    add_json_flag(parser)
    args = parser.parse_args()
    records = make_records(args.samples, args.sample_kib)
    n = len(records)

    local = best([local_run(records, args.maxcount) for _ in range(args.repeats)])
    memory = best([object_run(f"memory://bench-{uuid.uuid4().hex[:8]}/run", records, args.maxcount)
                   for _ in range(args.repeats)])
    proc, endpoint = moto_process()
    try:
        with s3_environment(endpoint):
            bucket = make_bucket("bench-object-commit")
            s3 = best([object_run(f"{bucket}/run-{i}", records, args.maxcount) for i in range(args.repeats)])
    finally:
        proc.kill()
        proc.wait()

    ref = n / local["seconds"]
    rows = [row("local disk: ShardSink + manifest", ref, "samples/s", reference_name="itself")]
    targets = (("memory://: ObjectShardSink + manifest", memory), ("moto S3: ObjectShardSink + manifest", s3))
    for name, result in targets:
        calls, shards = result["calls"], result["shards"]
        rows.append(row(name, n / result["seconds"], "samples/s", ref, "local disk ShardSink",
                        puts_per_shard=round((calls["put"] - 1) / shards, 2), puts_total=calls["put"],
                        gets=calls.get("get", 0), lists=calls.get("list", 0),
                        objects_per_pair=round((2 * shards + 1) / n, 3)))
    emit("object_commit", rows, args.json, samples=n, sample_kib=args.sample_kib, shards=s3["shards"],
         mib=round(n * args.sample_kib / 1024, 1))
    for r in rows[1:]:
        print(f"{r['name']}: {r['puts_per_shard']} PUTs per shard (+1 manifest), "
              f"{r['objects_per_pair']} objects per pair, {r['gets']} GETs, {r['lists']} LISTs")


if __name__ == "__main__":
    main()
