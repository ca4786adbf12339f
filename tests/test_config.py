import pytest
import yaml

from factory.config import ConfigError, FactoryConfig, load_config, save_config


def test_demo_config_loads_with_overrides():
    cfg = load_config("configs/demo.yaml", ["ingest.clip_frames=50", "executor.kind=local", "out=/tmp/x"])
    assert isinstance(cfg, FactoryConfig)
    assert cfg.ingest.clip_frames == 50 and cfg.executor.kind == "local" and cfg.out == "/tmp/x"
    assert cfg.input.demo is True


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="ingest.clip_frame'"):
        load_config("configs/demo.yaml", ["ingest.clip_frame=50"])


def test_unknown_section_key_in_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("generate:\n  generatr: transplant\n")
    with pytest.raises(ConfigError, match="generate.generatr"):
        load_config(path)


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match="ingest.clip_frames"):
        load_config(None, ["ingest.clip_frames=many"])


def test_override_values_are_data_not_code():
    cfg = load_config(None, ["out=__import__('os').system('false')"])
    assert cfg.out == "__import__('os').system('false')"


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["generate.feather_sigma=3", "input.paths=[a, b]"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg and again.input.paths == ["a", "b"]
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["generate"]["feather_sigma"] == 3.0


def test_hash_ignores_output_location_but_not_settings():
    a, b = load_config(None, ["out=x"]), load_config(None, ["out=y"])
    c = load_config(None, ["generate.feather_sigma=1"])
    assert a.hash() == b.hash() != c.hash()


def test_gpu_config_enables_the_model_stages_and_names_every_missing_weight(tmp_path):
    from factory.model_paths import check_model_paths
    from pipelines.pseudo_pairs import pair_stages

    cfg = load_config("configs/gpu.yaml", [f"out={tmp_path}"])
    assert cfg.occlusion.enabled and cfg.filters.vlm_quality.enabled and cfg.filters.identity.backend == "arcface"
    names = [s.name for s in pair_stages(cfg)]
    assert names[:4] == ["generate", "mouth_distance", "identity", "vlm_quality"] and names[-1] == "encode"
    vlm = next(s for s in pair_stages(cfg) if s.name == "vlm_quality")
    assert vlm.resources.num_gpus == 1 and vlm.resources.batch_size == 8
    with pytest.raises(ConfigError) as err:
        check_model_paths(cfg)  # none of the example paths exist here
    for key in ("filters.identity.arcface_path", "filters.vlm_quality.model_path", "occlusion.sam2_checkpoint"):
        assert key in str(err.value)


def test_demo_config_runs_identity_mouth_distance_and_augmentation():
    from factory.model_paths import missing_model_paths
    from pipelines.pseudo_pairs import pair_stages

    cfg = load_config("configs/demo.yaml")
    assert [s.name for s in pair_stages(cfg)] == ["generate", "mouth_distance", "identity", "augment", "encode"]
    assert missing_model_paths(cfg) == []  # the demo needs no weights beyond what the wheels ship
