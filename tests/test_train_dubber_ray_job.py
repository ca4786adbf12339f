"""`factory train-dubber` on a cluster as a user runs it: `ray job submit --working-dir ROOT --
python -m factory.cli train-dubber CONFIG ... loop.executor=ray` against a local `ray start --head`
(2 CPUs, one Ray Train rank), then a second submission with more steps that resumes the first's
checkpoint, and a relative `loop.out` refused (it would be written into the job's temporary copy
of the working dir).

The working dir upload stays small without a runtime_env `excludes`: Ray 2.60 leaves out `.git`
and `.venv` by default and follows .gitignore (runs/, out/, caches).
"""

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from tests.ray_head import ray_head

ROOT = Path(__file__).resolve().parent.parent
CONFIG = "configs/dubber_flashlips_cpu.yaml"  # relative: read from the job's copy of the working dir


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Seven 77-frame pairs of two demo videos at the config's 64 px (about 30 s: `factory pairs`)."""
    from factory.demo import SENTENCES
    from tests.flashlips_corpus import pair_manifest

    return pair_manifest(tmp_path_factory.mktemp("flashlips_pairs"), SENTENCES[:2], 64,
                         "filters.identity.enabled=false")


def train_dubber(pairs: Path, out: Path | str, steps: int) -> list[str]:
    return ["python", "-m", "factory.cli", "train-dubber", CONFIG, f"manifests=[{pairs}]",
            "loop.executor=ray", "loop.num_workers=1", f"loop.out={out}", f"loop.steps={steps}",
            "loop.eval_every=0", "loop.progress=false"]


def editor_weights(run: Path) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in load_file(str(run / "final" / "editor" / "diffusion_pytorch_model.safetensors")).items()}


def job_output(result) -> str:
    return result.stdout[-4000:] + result.stderr[-2000:]


@pytest.mark.slow
def test_train_dubber_as_a_ray_job_trains_exports_and_resumes(pairs, tmp_path):
    from factory.generators.latent_editor import LatentEditorGenerator
    from factory.trainers.checkpoints import load_trainer_state

    out = tmp_path / "flashlips"
    with ray_head(num_cpus=2) as head:
        first = head.submit(train_dubber(pairs, out, steps=2), working_dir=ROOT, cwd=ROOT)
        assert first.returncode == 0, job_output(first)
        assert "succeeded" in first.stdout
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["steps"] == 2 and metrics["resumed_from"] is None
        editor = LatentEditorGenerator.from_pretrained(out / "final")  # the save_pretrained folder loads
        assert editor.settings.resolution == 64
        state = load_trainer_state(out / "checkpoints" / "step-00000002")  # the trainer state file
        assert state["step"] == 2 and state["world_size"] == 1 and state["recipe"] == "flashlips-refine"
        assert list((out / "tensorboard").glob("events.out.tfevents.*"))
        assert list((out / "ray").rglob("step-00000002"))  # reported to Ray Train too
        after_two = editor_weights(out)

        second = head.submit(train_dubber(pairs, out, steps=4), working_dir=ROOT, cwd=ROOT)
        assert second.returncode == 0, job_output(second)
        assert "resuming" in second.stdout and "from step 2" in second.stdout, job_output(second)
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["steps"] == 4 and metrics["resumed_from"] == 2  # continued, not restarted
        assert load_trainer_state(out / "checkpoints" / "step-00000004")["step"] == 4
        assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]
        after_four = editor_weights(out)
        assert after_two.keys() == after_four.keys()
        assert any(not np.array_equal(after_two[k], after_four[k]) for k in after_two)  # two more steps trained

        relative = head.submit(train_dubber(pairs, "runs/lost_with_the_job", steps=2), working_dir=ROOT, cwd=ROOT)
        assert relative.returncode != 0 and "failed" in relative.stdout, job_output(relative)
        assert "config key 'loop.out' is a relative path" in relative.stdout, job_output(relative)
        assert not (ROOT / "runs" / "lost_with_the_job").exists()


def test_relative_out_is_refused_only_inside_a_working_dir_job(monkeypatch):
    """The driver's environment as Ray's job supervisor sets it (the slow test above meets the real one)."""
    from factory.config import ConfigError
    from factory.trainers.loop import refuse_out_lost_with_the_job

    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    refuse_out_lost_with_the_job("runs/x")  # a local run: relative to where the user stands
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"env_vars": {}}}))
    refuse_out_lost_with_the_job("runs/x")  # a job without --working-dir runs where `ray start` ran
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR",
                       json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_0123.zip", "env_vars": {}}}))
    refuse_out_lost_with_the_job("/mnt/shared/runs/x")
    refuse_out_lost_with_the_job("s3://bucket/runs/x")
    with pytest.raises(ConfigError, match="'loop.out' is a relative path"):
        refuse_out_lost_with_the_job("runs/x")
