"""The object-storage rig of issue 15, as a developer starts it on one machine: the local S3
server (moto), a Ray head (`ray start --head`) and a second node (`ray start --address`, its own
temp dir), no shared folder used for data. The run reads its videos from s3://, its workers write
clip objects, the driver commits shards; `factory verify` passes on the URL; a run whose worker
node is killed mid-run resumes to the same samples."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from factory import storage
from tests.cli import FINISHED_RUN, factory_command, run_args
from tests.ray_head import actor_nodes, alive_nodes, ray_head, ray_node
from tests.s3_server import TEST_CREDENTIALS, make_bucket, s3_environment, s3_server
from tests.test_object_run import fates, objects, uncommitted

ROOT = Path(__file__).resolve().parents[1]
ON_RAY = [o for o in FINISHED_RUN if not o.startswith("executor.kind")] + ["executor.kind=ray"]


def factory(*args: str, env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(factory_command(*args), env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def wait_for_clips(out: str, process: subprocess.Popen, timeout: float = 600) -> None:
    """Until a worker has written a clip object (ingest is under way), or the run ended."""
    deadline = time.monotonic() + timeout
    while not any(o.startswith("clips/") and o.endswith(".npz") for o in objects(out) if storage.exists(out)):
        assert process.poll() is None, f"the run ended before any clip was written: {process.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "no clip object after the run started"
        time.sleep(0.5)


@pytest.mark.slow
def test_the_demo_on_two_nodes_and_s3_verifies_and_survives_a_worker_node_kill(talking_videos, tmp_path):
    with s3_server() as endpoint, s3_environment(endpoint):
        aws = {**TEST_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}
        bucket = make_bucket("rig")
        for video in sorted(Path(talking_videos).iterdir()):  # the inputs live in the bucket too
            storage.upload(video, f"{bucket}/input/{video.name}")
        inputs = ["input.demo=false", f"input.paths=[{bucket}/input]"]
        # the reference: the same inputs (a video's key hashes its URL), in-process, out on local disk
        local = factory(*run_args(tmp_path / "local", *FINISHED_RUN, *inputs), "-q", env={**os.environ, **aws})
        assert local.returncode == 0, local.stderr[-3000:]
        reference = fates(tmp_path / "local")
        with ray_head(num_cpus=1, env=aws) as head, ray_node(head, num_cpus=1) as node:
            assert len(alive_nodes(head)) == 2
            overrides = [*ON_RAY, f"executor.address={head.address}", *inputs]

            out = f"{bucket}/two-node"
            done = factory(*run_args(out, *overrides), "-q", env=head.env)
            assert done.returncode == 0, done.stderr[-3000:]
            assert actor_nodes(head, "StageWorker") >= {node.node_id}  # the second node did work
            assert fates(out) == reference
            checked = factory("verify", out, env=head.env)
            assert checked.returncode == 0 and "OK" in checked.stdout, checked.stdout + checked.stderr

            out = f"{bucket}/node-killed"
            with subprocess.Popen(factory_command(*run_args(out, *overrides), "-q"), env=head.env, cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as run:
                wait_for_clips(out, run)
                node.kill()
                _, stderr = run.communicate(timeout=900)  # it may finish on the head alone, or stop: either way, resume
            print(f"the run whose node was killed exited {run.returncode}; its last words: {stderr[-600:]}")
            resumed = factory(*run_args(out, *overrides), "-q", env=head.env)
            assert resumed.returncode == 0, resumed.stderr[-3000:]
            assert len(alive_nodes(head)) == 1
            assert fates(out) == reference
            assert uncommitted(out) == []
            checked = factory("verify", out, env=head.env)
            assert checked.returncode == 0, checked.stdout + checked.stderr
