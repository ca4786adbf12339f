"""`ray job submit --working-dir . -- python factory/run.py CONFIG` against a local `ray start --head`."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.cli import QUIET, SHORT_CLIPS, run_args

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ray_job_submit_runs_the_factory(tmp_path, still_talker):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"  # Ray 2.60 enables token auth by default (ENVIRONMENT.md)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # as with an activated venv
    ray = str(BIN / "ray")
    port, dash = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 chars
    started = subprocess.run([ray, "start", "--head", f"--port={port}", "--num-cpus=2", "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={dash}", f"--temp-dir={temp_dir}", "--disable-usage-stats"],
                   env=env, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    try:
        inputs = tmp_path / "videos"
        inputs.mkdir()
        shutil.copy(still_talker, inputs / "a.mp4")
        out = tmp_path / "out"
        result = subprocess.run(
            [ray, "job", "submit", f"--address=http://127.0.0.1:{dash}", "--working-dir", str(ROOT), "--",
             "python", "factory/run.py",
             *run_args(out, *SHORT_CLIPS, "filters.mouth_distance.min_lmd=0", "filters.real_clip.enabled=false",
                                QUIET, videos=inputs)[1:]],
            env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "succeeded" in result.stdout
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["stats"]["pairs_written"] >= 4
        assert all((out / s["url"]).exists() for s in manifest["shardlist"])
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp_dir, ignore_errors=True)
