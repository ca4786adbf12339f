"""Every config value is checked against its range when the config loads (pipelines/limits.py)."""

import subprocess
from pathlib import Path

import pytest

from factory.config import ConfigError
from factory.validation import leaves, rule_for
from pipelines.limits import RULES
from pipelines.settings import load_factory_config
from tests.cli import CONFIG, factory_command

BAD = [  # (override, the range the message must state)
    ("ingest.fps=-25", "an integer >= 1"),  # hung an ingest worker forever
    ("ingest.clip_frames=0", "an integer >= 1"),  # exited 0, every video "too_short"
    ("ingest.clip_frames=-5", "an integer >= 1"),
    ("ingest.clip_stride=0", "an integer >= 1"),
    ("write.shard_maxcount=0", "an integer >= 1"),
    ("write.video_crf=60", "in [0, 51]"),
    ("filters.identity.min_csim=-2", "in [-1, 1]"),
    ("filters.mouth_distance.min_lmd=-1", ">= 0"),
    ("filters.alt_identity.min_alt_csim=1.5", "in [-1, 1]"),
    ("filters.real_clip.min_sharpness=-3", ">= 0"),
    ("filters.vlm_quality.min_mean=7", "in [1, 5]"),
    ("filters.identity.backend=facenet", "'dlib', 'arcface'"),
    ("ingest.vad_threshold=1.5", "in [0, 1]"),
    ("pair.heldout_share=-0.1", "in [0, 1]"),
    ("pair.speakers=everyone", "'video', 'all', 'file'"),
    ("augment.share=2", "in [0, 1]"),
    ("executor.kind=dask", "'ray', 'local'"),
    ("generate.resources.pool_size=0", "an integer >= 1"),
    ("filters.identity.resources.batch_size=-1", "an integer >= 1"),
    ("occlusion.image_size=100", "multiple of 32"),
    ("ingest.sample_rate=22050", "silero-vad"),
    ("seed=-1", ">= 0"),
]


@pytest.mark.parametrize("override,allowed", BAD)
def test_a_value_out_of_range_is_refused_naming_key_and_range(override, allowed):
    key, value = override.split("=")
    with pytest.raises(ConfigError) as info:
        load_factory_config(CONFIG, [override])
    message = str(info.value)
    assert f"'{key}'" in message and allowed in message and value in message, message


def test_audio_samples_per_frame_must_be_whole():
    with pytest.raises(ConfigError, match="ingest.sample_rate' must be a multiple of ingest.fps"):
        load_factory_config(CONFIG, ["ingest.fps=30"])
    assert load_factory_config(CONFIG, ["ingest.fps=30", "ingest.sample_rate=48000"]).ingest.fps == 30


def test_shipped_configs_and_nulls_where_allowed_pass():
    from factory.trainers.dubbers import load_recipe as load_dubber_recipe
    from factory.trainers.generators import load_recipe

    trainer_configs = {"syncnet.yaml", "syncnet_cpu.yaml"}  # `factory train-syncnet`'s, another schema
    for path in sorted(Path("configs").glob("*.yaml")):
        if path.name.startswith("generator_"):  # `factory train-generator`'s: each recipe's schema
            load_recipe(path, ["clip_stores=[runs/some-store]"])  # the one key they leave to the command line
        elif path.name.startswith("dubber_"):  # `factory train-dubber`'s: each recipe's schema
            load_dubber_recipe(path, ["manifests=[runs/some-run]"])
        elif path.name.startswith("refine_"):  # `factory refine`'s
            from factory.config import load_config
            from pipelines.refine import RefineConfig

            load_config(RefineConfig, path)
        elif path.name not in trainer_configs:
            load_factory_config(path)
    load_factory_config(CONFIG, ["filters.identity.min_csim=null", "pair.max_reuse=null",
                                 "filters.real_clip.max_abs_yaw=null", "write.previews=0"])


def test_every_built_in_value_with_a_range_has_a_rule():
    """A new numeric or choice key must get its line in pipelines/limits.py."""
    cfg = load_factory_config(None).to_dict()
    cfg["generate"].pop("settings")  # the generator's own: its Settings class types them
    missing = [key for key, value in leaves(cfg)
               if isinstance(value, (int, float, type(None))) and not isinstance(value, bool)
               and rule_for(key, RULES) is None and not key.endswith(("_path", "checkpoint", "weights",
                                                                       "address", "speaker_map", "clip_store"))]
    assert missing == []


def test_the_cli_exits_2_with_one_line_instead_of_hanging():
    result = subprocess.run(factory_command("run", CONFIG, "ingest.fps=-25", "executor.kind=local", "-q"),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        "factory: config error: config key 'ingest.fps' must be an integer >= 1, got -25"]


def test_an_unknown_generator_is_refused_on_the_driver():
    result = subprocess.run(factory_command("run", CONFIG, "generate.generator=nope", "-q"),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "generate.generator" in result.stderr


def test_every_rule_names_a_key_that_exists():
    """A renamed key leaves no stale line behind (its new name would go unchecked)."""
    keys = {key for key, _ in leaves(load_factory_config(None).to_dict())}
    assert [pattern for pattern in RULES if "*" not in pattern and pattern not in keys] == []
