from dataclasses import dataclass, field

import pytest
import yaml

from factory.config import ConfigError, config_yaml, digest, load_config
from factory.generators import Generator, register
from factory.stage import Resources
from pipelines.settings import FactoryConfig, load_factory_config, pairs_identity


def test_demo_config_loads_with_overrides():
    cfg = load_factory_config("configs/demo.yaml", ["ingest.clip_frames=50", "executor.kind=local", "out=/tmp/x"])
    assert isinstance(cfg, FactoryConfig)
    assert cfg.ingest.clip_frames == 50 and cfg.executor.kind == "local" and cfg.out == "/tmp/x"


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="ingest.clip_frame'"):
        load_factory_config("configs/demo.yaml", ["ingest.clip_frame=50"])


def test_unknown_section_key_in_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("generate:\n  generatr: transplant\n")
    with pytest.raises(ConfigError, match="generate.generatr"):
        load_factory_config(path)


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match="ingest.clip_frames"):
        load_factory_config(None, ["ingest.clip_frames=many"])
    with pytest.raises(ConfigError, match="generate.resources.num_gpus"):
        load_factory_config(None, ["generate.resources.num_gpus=lots"])


def test_override_values_are_data_not_code():
    cfg = load_factory_config(None, ["out=__import__('os').system('false')", "input.paths=['${oc.env:HOME}']"])
    assert cfg.out == "__import__('os').system('false')"
    assert cfg.input.paths == ["${oc.env:HOME}"]  # not resolved: config values are never evaluated


def test_resolved_config_round_trips(tmp_path):
    cfg = load_factory_config(None, ["generate.feather_sigma=3", "input.paths=[a, b]",
                                     "generate.settings.colour_match=false"])
    (tmp_path / "config.yaml").write_text(config_yaml(cfg))
    again = load_factory_config(tmp_path / "config.yaml")
    assert again == cfg and again.input.paths == ["a", "b"] and again.generate.settings.colour_match is False
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["generate"]["feather_sigma"] == 3.0


def test_the_generic_loader_serves_any_schema(tmp_path):
    @dataclass
    class TrainSettings:  # e.g. a trainer's config, later
        steps: int = 10
        resources: Resources = field(default_factory=Resources)

    path = tmp_path / "t.yaml"
    path.write_text("steps: 20\nresources: {num_gpus: 0.5}\n")
    cfg = load_config(TrainSettings, path, ["resources.pool_size=3"])
    assert (cfg.steps, cfg.resources.num_gpus, cfg.resources.pool_size) == (20, 0.5, 3)
    with pytest.raises(ConfigError, match="resources.pools"):
        load_config(TrainSettings, path, ["resources.pools=3"])


def test_hash_ignores_location_and_resources_but_not_settings():
    a, b = load_factory_config(None, ["out=x"]), load_factory_config(None, ["out=y", "generate.resources.pool_size=7"])
    c = load_factory_config(None, ["generate.feather_sigma=1"])
    assert digest(pairs_identity(a)) == digest(pairs_identity(b)) != digest(pairs_identity(c))


@dataclass
class EchoSettings:
    strength: float = 1.0
    mode: str = "copy"


@register
class EchoGenerator(Generator):
    """A plug-in generator with its own keys (re-renders the real frames unchanged)."""

    name = "test_echo"
    Settings = EchoSettings

    def generate(self, inp):
        return inp.real_frames


def test_a_generator_brings_its_own_settings():
    cfg = load_factory_config(None, ["generate.generator=test_echo", "generate.settings.strength=0.5"])
    assert cfg.generate.settings == EchoSettings(strength=0.5)
    with pytest.raises(ConfigError, match="generate.settings.strenght"):
        load_factory_config(None, ["generate.generator=test_echo", "generate.settings.strenght=0.5"])
    with pytest.raises(ConfigError, match="generate.settings.strength"):
        load_factory_config(None, ["generate.generator=test_echo", "generate.settings.strength=strong"])
    with pytest.raises(ConfigError, match="generate.settings.strength"):  # transplant has no such key
        load_factory_config(None, ["generate.settings.strength=0.5"])
    with pytest.raises(ConfigError, match="unknown generator 'nope'"):
        load_factory_config(None, ["generate.generator=nope"])


def test_every_filter_has_a_section_from_the_registry():
    from filters.registry import filter_specs

    cfg = load_factory_config(None, ["filters.identity.min_csim=0.9", "filters.vlm_quality.resources.num_gpus=0.5"])
    for spec in filter_specs():
        assert isinstance(getattr(cfg.filters, spec.name), spec.settings)
    assert cfg.filters.identity.min_csim == 0.9 and cfg.filters.vlm_quality.resources.num_gpus == 0.5
    with pytest.raises(ConfigError, match="filters.sharpness"):
        load_factory_config(None, ["filters.sharpness.enabled=true"])


def test_gpu_config_names_every_missing_weight(tmp_path):
    from pipelines.model_paths import check_model_paths
    from pipelines.pseudo_pairs import pair_stages

    cfg = load_factory_config("configs/gpu.yaml", [f"out={tmp_path}"])
    vlm = next(s for s in pair_stages(cfg) if s.name == "vlm_quality")
    assert vlm.resources.num_gpus == 1 and vlm.resources.batch_size == 8  # the resources section reaches the stage
    with pytest.raises(ConfigError) as err:
        check_model_paths(cfg)  # none of the example paths exist here
    for key in ("filters.identity.arcface_path", "filters.vlm_quality.model_path", "occlusion.sam2_checkpoint"):
        assert key in str(err.value)
    with pytest.raises(ConfigError, match="generate.weights"):
        check_model_paths(load_factory_config(None, [f"generate.weights={tmp_path / 'none'}"]))


def test_demo_config_needs_no_weights():
    from pipelines.model_paths import missing_model_paths

    assert missing_model_paths(load_factory_config("configs/demo.yaml")) == []


def test_an_idle_sync_gate_is_not_part_of_an_outputs_identity():
    """Outputs made before the sync gate existed must not be refused for keys that change nothing."""
    from pipelines.settings import ingest_identity, load_factory_config, pairs_identity

    idle = load_factory_config(None)
    assert "sync" not in pairs_identity(idle)["filters"]
    assert "sync_max_offset" not in pairs_identity(idle)["ingest"] and "correct_offset" not in ingest_identity(idle)["ingest"]
    gated = load_factory_config(None, ["ingest.syncnet_path=/models/syncnet"])
    assert pairs_identity(gated)["filters"]["sync"]["min_sync_conf"] == 3.0
    assert ingest_identity(gated)["ingest"]["sync_max_offset"] == 15
    assert "sync" in idle.to_dict()["filters"]  # the config itself still has them


def test_a_generator_folder_brings_its_settings_and_the_run_can_override_them(tmp_path):
    """generate.weights=<folder>: the folder's saved settings are the run's, unless the run gives
    its own (then those win, key by key); a folder of another generator is refused naming the key."""
    from factory.config import ConfigError
    from factory.generators.transplant import TransplantGenerator, TransplantSettings
    from pipelines.settings import load_factory_config

    folder = tmp_path / "gen"
    TransplantGenerator(TransplantSettings(colour_match=False)).save_pretrained(folder)
    cfg = load_factory_config(None, [f"generate.weights={folder}"])
    assert cfg.generate.settings.colour_match is False
    cfg = load_factory_config(None, [f"generate.weights={folder}", "generate.settings.colour_match=true"])
    assert cfg.generate.settings.colour_match is True
    (folder / "config.json").write_text('{"generator": "dit_inpainter", "settings": {}}')
    with pytest.raises(ConfigError, match="generate.weights"):
        load_factory_config(None, [f"generate.weights={folder}"])
    with pytest.raises(ConfigError, match="generate.weights"):
        load_factory_config(None, [f"generate.weights={tmp_path / 'nowhere'}"])
