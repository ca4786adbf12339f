"""ray_cluster.yaml is checked offline against Ray's own cluster-launcher schema."""

from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import fillout_defaults, validate_config

CONFIG = Path(__file__).resolve().parent.parent / "ray_cluster.yaml"


def load():
    return yaml.safe_load(CONFIG.read_text())


def test_cluster_config_is_valid_for_ray():
    validate_config(fillout_defaults(load()))


def test_unknown_keys_are_caught_so_the_check_is_real():
    cfg = load()
    cfg["gpu_workers_please"] = 3
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        validate_config(fillout_defaults(cfg))


def test_gpu_workers_and_project_install():
    cfg = load()
    gpu_types = [t for t in cfg["available_node_types"].values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu_types and gpu_types[0]["max_workers"] >= 1
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert any("pip install" in c and "pseudo-pair-factory" in c for c in cfg["setup_commands"])
    assert "~/pseudo-pair-factory" in cfg["file_mounts"]
    start = " ".join(cfg["head_start_ray_commands"])
    assert "--autoscaling-config" in start and "--dashboard-host=127.0.0.1" in start
