"""Every model the factory runs loads from a local path set in config (nothing is downloaded).
Checked on the driver before any work, so a missing file fails the run at once with the key to
set, instead of failing every sample on the workers. (On a cluster the paths must be the same on
every node: a shared filesystem or the same image.)"""

from __future__ import annotations

from pathlib import Path

from factory.config import ConfigError
from filters.registry import enabled_filters
from pipelines.settings import FactoryConfig


def occlusion_vlm_key(cfg: FactoryConfig) -> str:
    return "occlusion.vlm_path" if cfg.occlusion.vlm_path else "filters.vlm_quality.model_path"


def occlusion_vlm_path(cfg: FactoryConfig) -> str | None:
    return cfg.occlusion.vlm_path or cfg.filters.vlm_quality.model_path


def wanted_model_paths(cfg: FactoryConfig) -> list[tuple[str, str | None, str]]:
    """(config key, path, "file" | "folder") of every local model the configured stages load."""
    wanted = [(f"filters.{spec.name}.{key}", path, kind)
              for spec, settings in enabled_filters(cfg.filters) for key, path, kind in spec.model_paths(settings)]
    if cfg.ingest.syncnet_path is not None:  # a train-syncnet folder or a syncnet_python file
        path = cfg.ingest.syncnet_path
        wanted.append(("ingest.syncnet_path", path, "file" if Path(path).is_file() else "folder"))
    if cfg.generate.weights is not None:
        wanted.append(("generate.weights", cfg.generate.weights, "folder"))
    if cfg.occlusion.enabled:
        wanted.append((occlusion_vlm_key(cfg), occlusion_vlm_path(cfg), "folder"))
        wanted.append(("occlusion.sam2_checkpoint", cfg.occlusion.sam2_checkpoint, "file"))
    return wanted


def missing_model_paths(cfg: FactoryConfig) -> list[str]:
    problems = []
    for key, path, kind in wanted_model_paths(cfg):
        ok = path and (Path(path).is_file() if kind == "file" else Path(path).is_dir())
        if not ok:
            problems.append(f"{key} = {path!r} is not an existing local {kind}")
    return problems


def check_model_paths(cfg: FactoryConfig) -> None:
    problems = missing_model_paths(cfg)
    if problems:
        raise ConfigError("model weights missing (nothing is downloaded; set these keys): " + "; ".join(problems))
