"""`factory run` with `out` on object storage: the same samples as on local disk, and a driver
killed with SIGKILL at each fault point resumes to an uninterrupted run's output, on the local S3
server (moto), with nothing orphaned and `factory verify` clean on the URL."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from factory import storage
from factory.cli import main
from manifests.object_commit import COMMITS, SHARDS
from manifests.table import read_table
from manifests.verify import verify
from tests.cli import CONFIG, FINISHED_RUN, run_factory, run_factory_subprocess
from tests.s3_server import TEST_CREDENTIALS, make_bucket, s3_environment, s3_server

# the clip store, shards, table, manifest and previews all under the URL; the worker faults of the
# local writer (ingest, generate, pair_written, rejection_recorded, manifest) plus the object
# protocol's own (object_put: shard object written, no record; object_committed: record written,
# manifest not; object_manifest: half the manifest handed to the store)
KILL_POINTS = ["ingest_clip@2", "generate@3", "pair_written@2", "object_put@1", "object_committed@2",
               "rejection_recorded@1", "manifest@1", "object_manifest@1"]


def fates(out) -> list[tuple]:
    return sorted((r["key"], r["fate"], r["reason"], r["shard"] is not None)
                  for r in read_table(storage.join(str(out), "samples.parquet")))


def kept(out) -> list[str]:
    return [key for key, fate, *_ in fates(out) if fate == "kept"]


def objects(url: str) -> list[str]:
    """Every object under the run's prefix, relative to it."""
    fs, root = storage.url_to_fs(url)
    fs.invalidate_cache()
    return sorted(p[len(root.rstrip("/")) + 1:] for p in fs.find(root))


def uncommitted(url: str) -> list[str]:
    """Shard objects no commit record names: orphans a resume must have deleted."""
    import json

    fs, root = storage.url_to_fs(url)
    named = {json.loads(fs.cat_file(p))["object"] for p in fs.find(f"{root}/{COMMITS}")}
    return [o for o in objects(url) if o.startswith(f"{SHARDS}/") and o not in named]


@pytest.fixture(scope="module")
def reference(finished_run):
    return fates(finished_run)


@pytest.fixture(scope="module")
def s3():
    """The local S3 server, its variables exported (for child processes too), and a bucket."""
    with s3_server() as endpoint, s3_environment(endpoint):
        make_bucket("runs")
        yield {**os.environ, **TEST_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}


@pytest.mark.slow
def test_a_run_on_memory_url_makes_the_local_runs_samples(talking_videos, reference, tmp_path, monkeypatch):
    config = str(Path(CONFIG).resolve())
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory (no `memory:` folder)
    out = "memory://factory-tests/run"
    assert run_factory(out, *FINISHED_RUN, videos=talking_videos, config=config) == 0
    assert list(tmp_path.iterdir()) == []
    assert fates(out) == reference
    assert verify(out)[0] == []
    names = objects(out)
    assert "manifest.json" in names and "config.yaml" in names and "samples.parquet" in names
    assert any(n.startswith("clips/") and n.endswith(".npz") for n in names)  # the clip store too
    assert uncommitted(out) == []
    # a rerun finds everything done: the same output, nothing added
    assert run_factory(out, *FINISHED_RUN, videos=talking_videos, config=config) == 0
    assert objects(out) == names and fates(out) == reference
    # `factory pairs` from the clip store on the URL, into another URL: the same kept pairs
    store = storage.join(out, "clips", next(n.split("/")[1] for n in names if n.startswith("clips/ingest-")))
    again = "memory://factory-tests/pairs"
    assert main(["pairs", config, f"clip_stores=[{store}]", f"out={again}", *FINISHED_RUN, "-q"]) == 0
    assert kept(again) == kept(out) and verify(again)[0] == []


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS)
def test_kill_at_point_on_s3_then_resume(s3, talking_videos, reference, point):
    out = f"s3://runs/{point.replace('@', '-')}"
    name, at = point.split("@")
    killed = run_factory_subprocess(out, *FINISHED_RUN, videos=talking_videos,
                                    env={**s3, "FACTORY_FAULTS": f"{name}=kill@{at}"}, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = run_factory_subprocess(out, *FINISHED_RUN, videos=talking_videos, env=s3, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert fates(out) == reference
    assert verify(out)[0] == []
    assert uncommitted(out) == []
    assert main(["verify", out]) == 0
