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


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync not installed")
def test_rsync_filters_keep_venv_and_runs_out(tmp_path):
    cfg = load()
    args = SSHCommandRunner._create_rsync_filter_args(None, cfg)  # the args `ray up` passes
    out = subprocess.run(["rsync", "-an", "--out-format=%n", *args, f"{ROOT}/", str(tmp_path / "dst")],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert "pyproject.toml" in out and any(p.startswith("factory/") for p in out)
    assert not any(p.startswith((".venv", "runs/", ".git/")) for p in out)


def test_every_node_starts_ray_with_token_auth_and_the_same_token():
    cfg = load()
    starts = [c for key in ("head_start_ray_commands", "worker_start_ray_commands") for c in cfg[key] if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in starts)
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_nodes_reach_object_storage_through_instance_roles_not_synced_secrets():
    cfg = load()
    assert any("-e ~/pseudo-pair-factory[s3]" in c for c in cfg["setup_commands"])  # s3fs on every node
    assert "IamInstanceProfile" in cfg["available_node_types"]["gpu_worker"]["node_config"]
    synced = " ".join([*cfg["file_mounts"], *cfg["file_mounts"].values()])
    assert ".aws" not in synced and "credentials" not in synced  # no key files copied to the nodes
    commands = " ".join(c for key in ("setup_commands", "head_start_ray_commands", "worker_start_ray_commands")
                        for c in cfg[key])
    assert "AWS_SECRET_ACCESS_KEY" not in commands and "AWS_ACCESS_KEY_ID" not in commands
