"""The pair loader reading a run from local disk against the same run on a local S3 server, in one run.

    .venv/bin/python bench/url_loader.py [--run OUT] [--samples 16] [--resolution 256] [--repeats 2] [--json PATH]

The run's manifest, table and shards are uploaded to a bucket of moto's S3 server (its own
process on 127.0.0.1, so its CPU is not this process's; tests/s3_server.py sets the AWS
variables), then each row is measured from disk and from s3:// (alternately, `--repeats` times,
the best of each), the S3 row's ratio taken to the disk row's:
  - opening the dataset (the index from the table, each shard's size and md5 checked: every
    shard's bytes read once), in opens/s;
  - raw tar samples streamed (manifests.reader.shard_samples, nothing decoded), samples/s;
  - PairDataset segments (clean pairs, 0 loader workers: webdataset streaming, shuffle buffers,
    decoding both sides, masks, resizing), segments/s.
A local server has no network latency: this measures the fsspec/s3fs path's own cost. A real
bucket adds latency per request (one GET stream per shard, ranged reads of 5 MiB blocks).
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.common import add_json_flag, demo_run, emit, row  # noqa: E402
from factory import storage  # noqa: E402
from factory.trainers.pair_data import PairDataConfig, PairDataset, _index  # noqa: E402
from manifests.reader import shard_samples, shard_urls  # noqa: E402
from tests.s3_server import free_port, make_bucket, s3_environment  # noqa: E402


def moto_process() -> tuple[subprocess.Popen, str]:
    """moto's S3 server as a child process on 127.0.0.1; (process, endpoint) once it answers."""
    import socket

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto's server did not start")


def timed(fn, repeats: int = 1) -> float:
    """Calls per second of fn."""
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return repeats / (time.perf_counter() - start)


def items_per_s(make_iter, n: int | None) -> tuple[float, int]:
    start, count = time.perf_counter(), 0
    for _ in itertools.islice(make_iter(), n):
        count += 1
    return count / (time.perf_counter() - start), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a finished run (default: a fresh demo run)")
    parser.add_argument("--samples", type=int, default=16, help="segments timed per place")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2, help="alternate disk and S3 this often, keep each's best")
    add_json_flag(parser)
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = Path(args.run) if args.run else demo_run(Path(tempfile.mkdtemp(prefix="bench-url-")) / "demo")
    proc, endpoint = moto_process()
    try:
        with s3_environment(endpoint):
            url = make_bucket("bench") + "/run"
            for name in ("manifest.json", "samples.parquet"):
                storage.upload(run / name, storage.join(url, name))
            objects = 2 + storage.upload_tree(run / "shards", storage.join(url, "shards"))
            rows = []

            def cfg(where: str) -> PairDataConfig:  # clean pairs: the usual case (a run augments ~5%)
                return PairDataConfig(manifests=[where], resolution=args.resolution, heldout_share=0.0, augment=False)

            def measure(label: str, unit: str, rate_of) -> None:
                # disk and S3 alternately, the best of `repeats` each: a shared machine's load moves
                disk, s3 = zip(*((rate_of(str(run)), rate_of(url)) for _ in range(args.repeats)))
                rows.append(row(f"{label}, local disk", max(disk), unit))
                rows.append(row(f"{label}, s3 (moto)", max(s3), unit, max(disk), f"{label}, local disk"))

            for where in (str(run), url):  # warm-up: imports, page cache, s3fs's client
                next(iter(PairDataset(cfg(where))))
            def open_rate(where: str) -> float:
                _index.cache_clear()  # made once per process and manifest version: time a first open
                return timed(lambda: PairDataset(cfg(where)))

            measure("open PairDataset (index + md5 of every shard)", "opens/s", open_rate)
            measure("raw tar samples (shard_samples)", "samples/s",
                    lambda where: items_per_s(lambda: shard_samples(shard_urls(storage.join(where, "manifest.json"))),
                                              None)[0])
            measure(f"PairDataset segments, clean pairs, 0 workers, {args.resolution} px", "segments/s",
                    lambda where: items_per_s(lambda: iter(PairDataset(cfg(where))), args.samples)[0])
            shards = len(shard_urls(run / "manifest.json"))
            size_mb = sum(p.stat().st_size for p in (run / "shards").rglob("*") if p.is_file()) / 2**20
            emit("url_loader", rows, args.json, objects_uploaded=objects, shards=shards, shard_mb=round(size_mb, 2))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
