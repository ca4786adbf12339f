"""`factory ... -q` prints only what matters: no progress bars, no Ray INFO line, no note that
Ray's token auth is on, no MediaPipe C++ warnings from the workers (they came between the bars)."""

import subprocess

import pytest

from tests.cli import factory_command

NOISE = ["Started a local Ray instance", "Token authentication is enabled", "W0000 00:00",
         "inference_feedback_manager", "INFO: Created TensorFlow Lite", "absl::InitializeLog", " INFO "]


@pytest.mark.slow
def test_a_quiet_ray_ingest_prints_no_ray_info_or_mediapipe_warnings(tmp_path, still_talker):
    result = subprocess.run(factory_command("ingest", "configs/demo.yaml", "input.demo=false",
                                            f"input.paths=[{still_talker}]", "executor.kind=ray",
                                            "ingest.clip_frames=25", "ingest.clip_stride=25",
                                            "ingest.max_clips_per_video=2", f"out={tmp_path / 'out'}", "-q"),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert '"clips": 2' in result.stdout  # the landmarker ran in a Ray worker
    noisy = [line for line in result.stderr.splitlines() if any(n in line for n in NOISE)]
    assert noisy == [], result.stderr[-3000:]
    assert "ingest:" not in result.stderr  # no bar


def test_mediapipe_prints_nothing_when_a_graph_first_runs_late(capfd):
    """The face mesh first runs when the first face shows up (here the fourth frame), after any
    start-up window: its warnings must not reach stderr; other stderr output still does."""
    import os

    import numpy as np

    from factory.faces.landmarks import FaceLandmarker
    from tests.conftest import face_frames

    noise = np.random.default_rng(0).integers(0, 256, (3, 192, 192, 3), dtype=np.uint8)
    with FaceLandmarker(static=False) as landmarker:
        found = [len(landmarker.detect(frame)) for frame in [*noise, *face_frames(3)]]
        os.write(2, b"E0000 a native error passes\n")
    assert found == [0, 0, 0, 1, 1, 1]
    err = capfd.readouterr().err
    assert [line for line in err.splitlines() if any(n in line for n in NOISE)] == [], err
    assert "E0000 a native error passes" in err
