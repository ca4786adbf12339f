"""`factory train-generator CONFIG [key=value ...]`: train a learned generator on clip stores.

The config's `generator` key picks the recipe (dit_inpainter: X-Dub Stage I; latent_editor:
FlashLips Stage 1); the rest of the file is that recipe's config dataclass, validated by the
project's loader (factory/config.py), with the shared loop settings under `loop`. The recipe's
`loop.out/final` folder is a generator folder: `generate.generator=<name> generate.weights=<it>`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from factory.config import ConfigError, apply_overrides, build, read_yaml

# generator name -> "module:RecipeClass"; the recipe class names its config dataclass (`Config`)
RECIPES = {
    "dit_inpainter": "factory.trainers.dit_recipe:DiTInpainterRecipe",
    "latent_editor": "factory.trainers.editor_recipe:LatentEditorRecipe",
}


def recipe_class(name: Any) -> type:
    if name not in RECIPES:
        raise ConfigError(f"config key 'generator': one of {', '.join(sorted(RECIPES))}, not {name!r}")
    module, cls = RECIPES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def load_recipe(path: str | Path | None, overrides=()):
    """The recipe object for a config file plus `key=value` overrides (ConfigError naming the key
    on any bad value)."""
    raw = apply_overrides(read_yaml(path), overrides)
    cls = recipe_class(raw.get("generator"))
    return cls(build(cls.Config, raw))


def train_generator(path: str | Path | None, overrides=(), stop_at: int | None = None) -> dict[str, Any]:
    from factory.trainers.loop import run_training

    return run_training(load_recipe(path, overrides), stop_at=stop_at)
