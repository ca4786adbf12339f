"""The settings of `factory ingest`, `factory pairs` and `factory run`, composed from the
components' own settings classes (each lives beside its stage, filter or generator).

`filters` gets one section per registered filter (filters/registry.py), so a plug-in filter brings
its own keys; `generate.settings` is validated against the chosen generator's `Settings` class.
"""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any, Iterable

from augment.stage import AugmentConfig
from factory.config import ConfigError, apply_overrides, build, read_yaml, strip_keys, to_dict
from factory.executors import ExecutorConfig
from factory.generators import generator_class
from factory.inputs import InputConfig
from factory.pairing import PairConfig
from factory import storage
from factory.storage import refuse_urls
from factory.stages.generate import GenerateConfig
from factory.stages.ingest import IngestConfig
from factory.stages.occlusion import OcclusionConfig
from factory.stages.track import TrackConfig
from filters.registry import filter_specs
from manifests.writer import WriteConfig
from pipelines.limits import check_limits


def _filters_schema() -> type:
    return make_dataclass("FiltersConfig", [(spec.name, spec.settings, field(default_factory=spec.settings))
                                            for spec in filter_specs()])


FiltersConfig = _filters_schema()  # module level, so instances pickle
FiltersConfig.__module__ = __name__


@dataclass
class FactoryConfig:
    out: str = "runs/demo"
    seed: int = 0
    clip_store: str | None = None  # where ingest keeps clips; null: OUT/clips (shared across runs if set)
    clip_stores: list[str] = field(default_factory=list)  # `factory pairs`: clip stores to read
    input: InputConfig = field(default_factory=InputConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    pair: PairConfig = field(default_factory=PairConfig)
    occlusion: OcclusionConfig = field(default_factory=OcclusionConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    write: WriteConfig = field(default_factory=WriteConfig)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def clip_store_root(self) -> Path | str:
        """A folder or a URL prefix: clip_store, or OUT/clips."""
        return storage.child(self.clip_store) if self.clip_store else storage.child(self.out, "clips")


# Keys that never change what a sample holds: where things go, how they run, how many previews.
NOT_SHAPING = {"out", "executor", "resources", "clip_store", "clip_stores", "previews"}


SYNC_GATE_KEYS = ("syncnet_path", "sync_max_offset", "correct_offset")


def without_idle_sync_gate(settings: dict[str, Any]) -> dict[str, Any]:
    """With no SyncNet configured the gate changes nothing (no clip has sync scores, the sync filter
    passes all): its keys are left out, so outputs made before it existed keep their identity."""
    ingest = settings.get("ingest", {})
    if ingest.get("syncnet_path") is None:
        for key in SYNC_GATE_KEYS:
            ingest.pop(key, None)
        settings.get("filters", {}).pop("sync", None)
    return settings


def pairs_identity(cfg: FactoryConfig) -> dict[str, Any]:
    return strip_keys(without_idle_sync_gate(cfg.to_dict()), NOT_SHAPING)


def ingest_identity(cfg: FactoryConfig) -> dict[str, Any]:
    """What makes a clip store's clips what they are: the ingest settings."""
    return strip_keys(without_idle_sync_gate({"ingest": to_dict(cfg.ingest)}), NOT_SHAPING)


def load_factory_config(path: str | Path | None, overrides: Iterable[str] = ()) -> FactoryConfig:
    data = apply_overrides(read_yaml(path), overrides)
    generate = data.get("generate") or {}
    settings = generate.pop("settings", None) if isinstance(generate, dict) else None
    cfg = build(FactoryConfig, data)
    refuse_urls({"generate.weights": cfg.generate.weights}, "a generator's weights")  # models load locally
    cls = generator_class(cfg.generate.generator)
    if settings is not None and not isinstance(settings, dict):
        raise ConfigError("config key 'generate.settings' must be a mapping")
    if cls.needs_weights and not cfg.generate.weights:
        raise ConfigError(f"generator '{cls.name}' is learned: set generate.weights to its folder "
                          f"(`factory train-generator` writes one as loop.out/final)")
    if cfg.generate.weights:  # the folder's settings, with the ones given here on top
        settings = {**saved_generator_settings(cfg.generate.weights, cls.name), **(settings or {})}
    cfg.generate.settings = build(cls.Settings, settings or {}, prefix="generate.settings.")
    check_limits(cfg.to_dict())  # ranges, before any work: a bad value fails here, naming its key
    return cfg


def saved_generator_settings(folder: str, name: str) -> dict[str, Any]:
    """The settings a generator folder (save_pretrained) was saved with; ConfigError naming
    generate.weights when it is not such a folder, or holds another generator."""
    from factory.generators.base import read_generator_config

    return read_generator_config(folder, name, key="generate.weights").get("settings") or {}
