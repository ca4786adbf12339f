"""`ray job submit --working-dir . -- python factory/run.py CONFIG` against a local `ray start --head`."""

import json
import shutil
from pathlib import Path

import pytest

from tests.cli import QUIET, SHORT_CLIPS, run_args
from tests.ray_head import ray_head

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_ray_job_submit_runs_the_factory(tmp_path, still_talker):
    with ray_head(num_cpus=2) as head:
        inputs = tmp_path / "videos"
        inputs.mkdir()
        shutil.copy(still_talker, inputs / "a.mp4")
        out = tmp_path / "out"
        result = head.submit(
            ["python", "factory/run.py",
             *run_args(out, *SHORT_CLIPS, "filters.mouth_distance.min_lmd=0", "filters.real_clip.enabled=false",
                       QUIET, videos=inputs)[1:]],
            working_dir=ROOT, cwd=ROOT, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "succeeded" in result.stdout
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["stats"]["pairs_written"] >= 4
        assert all((out / s["url"]).exists() for s in manifest["shardlist"])
