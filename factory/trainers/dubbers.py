"""`factory train-dubber CONFIG [key=value ...]`: train a mask-free dubber on the factory's pairs.

The config's `recipe` key picks the recipe (xdub-stage2: X-Dub Stage II, one run per phase); the
rest of the file is that recipe's config dataclass, validated by the project's loader
(factory/config.py), with the shared loop settings under `loop`. The run's `loop.out/final` folder
is the trained dubber (and the next phase's `init_from`).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from factory.config import ConfigError, apply_overrides, build, read_yaml

# recipe name -> "module:RecipeClass"; the recipe class names its config dataclass (`Config`)
RECIPES = {
    "xdub-stage2": "factory.trainers.xdub_recipe:XDubRecipe",
}


def recipe_class(name: Any) -> type:
    if name not in RECIPES:
        raise ConfigError(f"config key 'recipe': one of {', '.join(sorted(RECIPES))}, not {name!r}")
    module, cls = RECIPES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def load_recipe(path: str | Path | None, overrides=()):
    """The recipe object for a config file plus `key=value` overrides (ConfigError naming the key
    on any bad value)."""
    raw = apply_overrides(read_yaml(path), overrides)
    cls = recipe_class(raw.get("recipe"))
    return cls(build(cls.Config, raw))


def train_dubber(path: str | Path | None, overrides=(), stop_at: int | None = None) -> dict[str, Any]:
    from factory.trainers.loop import run_training

    return run_training(load_recipe(path, overrides), stop_at=stop_at)
