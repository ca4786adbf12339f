"""Every model the factory runs loads from a local path set in config (nothing is downloaded).
Checked on the driver before any work, so a missing file fails the run at once with the key to
set, instead of failing every sample on the workers. (On a cluster the paths must be the same on
every node: a shared filesystem or the same image.)"""

from __future__ import annotations

from pathlib import Path

from factory.config import ConfigError, FactoryConfig


def occlusion_vlm_path(cfg: FactoryConfig) -> str | None:
    return cfg.occlusion.vlm_path or cfg.filters.vlm_quality.model_path


def missing_model_paths(cfg: FactoryConfig) -> list[str]:
    wanted: list[tuple[str, str | None, str]] = []  # (config key, path, "file" | "folder")
    identity = cfg.filters.identity
    if identity.enabled and identity.backend == "arcface":
        wanted.append(("filters.identity.arcface_path", identity.arcface_path, "file"))
    if cfg.filters.vlm_quality.enabled:
        wanted.append(("filters.vlm_quality.model_path", cfg.filters.vlm_quality.model_path, "folder"))
    if cfg.occlusion.enabled:
        key = "occlusion.vlm_path" if cfg.occlusion.vlm_path else "filters.vlm_quality.model_path"
        wanted.append((key, occlusion_vlm_path(cfg), "folder"))
        wanted.append(("occlusion.sam2_checkpoint", cfg.occlusion.sam2_checkpoint, "file"))
    problems = []
    for key, path, kind in wanted:
        ok = path and (Path(path).is_file() if kind == "file" else Path(path).is_dir())
        if not ok:
            problems.append(f"{key} = {path!r} is not an existing local {kind}")
    return problems


def check_model_paths(cfg: FactoryConfig) -> None:
    problems = missing_model_paths(cfg)
    if problems:
        raise ConfigError("model weights missing (nothing is downloaded; set these keys): " + "; ".join(problems))
