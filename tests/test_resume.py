"""Kill -9 the driver at each risky point, rerun the same command: the output must equal an
uninterrupted run's, every sample exactly once, nothing half-written, and verify must pass."""

import os
import signal

import pytest

from manifests.table import read_table
from manifests.verify import verify
from tests.cli import FINISHED_RUN, run_factory, run_factory_subprocess

SETTINGS = FINISHED_RUN  # so the session's shared run is the uninterrupted reference

# (fault point, which hit): ingest mid-video and after a video, generation, mid-shard, between a
# shard's rename and its ledger entry, between ledger and shard list, a rejection, the manifest.
KILL_POINTS = ["ingest_clip@2", "ingest_done@1", "generate@3", "pair_written@2", "shard_renamed@1",
               "shard_committed@2", "rejection_recorded@1", "manifest@1"]


def fates(out):
    return sorted((r["key"], r["fate"], r["reason"], r["shard"] is not None) for r in read_table(out / "samples.parquet"))


@pytest.fixture(scope="module")
def reference(finished_run):
    return fates(finished_run)


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS)
def test_kill_at_point_then_resume(tmp_path, talking_videos, reference, point):
    out = tmp_path / "out"
    name, at = point.split("@")
    env = {**os.environ, "FACTORY_FAULTS": f"{name}=kill@{at}"}
    killed = run_factory_subprocess(out, *SETTINGS, videos=talking_videos, env=env, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert run_factory(out, *SETTINGS, videos=talking_videos) == 0
    assert fates(out) == reference
    assert verify(out)[0] == []
    assert not list(out.rglob("*.partial")) and not list(out.rglob("*.tmp"))
