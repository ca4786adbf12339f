"""ray_cluster.yaml is checked offline against Ray's own cluster-launcher schema.

fillout_defaults merges Ray's packaged aws/defaults.yaml (no network, no AWS credentials);
validate_config checks the result against ray/autoscaler/ray-schema.json.
"""

import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.command_runner import SSHCommandRunner
from ray.autoscaler._private.util import fillout_defaults, prepare_config, validate_config

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "ray_cluster.yaml"


def load():
    return yaml.safe_load(CONFIG.read_text())


def test_cluster_config_is_valid_for_ray():
    validate_config(fillout_defaults(load()))
    # The full path `ray up` takes (defaults, setup-command merge, per-type worker limits).
    prepared = prepare_config(load())
    validate_config(prepared)
    assert prepared["cluster_name"] == "pseudo-pair-factory"


def test_unknown_keys_are_caught_so_the_check_is_real():
    cfg = load()
    cfg["gpu_workers_please"] = 3
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        validate_config(fillout_defaults(cfg))
    cfg = load()
    cfg["available_node_types"]["gpu_worker"]["gpus"] = 1  # not a node-type field
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        validate_config(fillout_defaults(cfg))


def test_gpu_workers_and_cpu_head():
    cfg = load()
    gpu_types = [t for t in cfg["available_node_types"].values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu_types and gpu_types[0]["max_workers"] >= 1 and gpu_types[0]["min_workers"] == 0
    assert gpu_types[0]["node_config"]["InstanceType"].startswith("g5.")
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["max_workers"] == 0
    assert cfg["max_workers"] >= gpu_types[0]["max_workers"]
    assert cfg["idle_timeout_minutes"] > 0


def test_setup_installs_the_synced_project_on_every_node():
    cfg = load()
    assert cfg["file_mounts"]["~/pseudo-pair-factory"] == "."
    setup = cfg["setup_commands"]
    assert any("pip install" in c and "-e ~/pseudo-pair-factory" in c for c in setup)
    assert any("apt-get install" in c and "espeak-ng" in c for c in setup)
    assert any("--no-build-isolation sam2==" in c for c in setup)  # the occlusion stage needs it
    # The autoscaler on the head runs in the same venv as ray, and needs boto3 there.
    assert any("venv/bin/pip install" in c and "boto3" in c for c in cfg["head_setup_commands"])
    # The local venv and run outputs must not be rsynced to the nodes.
    excludes = cfg["rsync_exclude"]
    assert "**/.venv/**" in excludes and "**/runs/**" in excludes


def test_start_commands():
    cfg = load()
    head = cfg["head_start_ray_commands"]
    assert "ray stop" in head[0]
    start = " ".join(head)
    assert "--head" in start and "--port=6379" in start
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in start
    # Auth is off, so the job API stays on the head's loopback (reached via `ray dashboard`).
    assert "--dashboard-host=127.0.0.1" in start
    workers = cfg["worker_start_ray_commands"]
    assert "ray stop" in workers[0] and "--address=$RAY_HEAD_IP:6379" in " ".join(workers)


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync not installed")
def test_rsync_filters_keep_venv_and_runs_out(tmp_path):
    cfg = load()
    args = SSHCommandRunner._create_rsync_filter_args(None, cfg)  # the args `ray up` passes
    out = subprocess.run(["rsync", "-an", "--out-format=%n", *args, f"{ROOT}/", str(tmp_path / "dst")],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert "pyproject.toml" in out and any(p.startswith("factory/") for p in out)
    assert not any(p.startswith((".venv", "runs/", ".git/")) for p in out)
