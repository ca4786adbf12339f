"""Config file -> recipe object, for every command that trains with the shared loop.

A command names the config key that picks the recipe (`generator` for `factory train-generator`,
`recipe` for `factory train-dubber`) and a table of recipe classes by name; the rest of the file
is that recipe's config dataclass (`RecipeClass.Config`), validated by the project's loader
(factory/config.py), with the shared loop settings under `loop`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from factory.config import ConfigError, apply_overrides, build, read_yaml


class RecipeTable:
    def __init__(self, key: str, recipes: dict[str, str]):
        self.key = key  # the config key naming the recipe
        self.recipes = recipes  # name -> "module:RecipeClass" (imported only when chosen)

    def recipe_class(self, name: Any) -> type:
        if name not in self.recipes:
            raise ConfigError(f"config key '{self.key}': one of {', '.join(sorted(self.recipes))}, not {name!r}")
        module, cls = self.recipes[name].split(":")
        return getattr(importlib.import_module(module), cls)

    def load(self, path: str | Path | None, overrides=()):
        """The recipe object for a config file plus `key=value` overrides (ConfigError naming the
        key on any bad value)."""
        raw = apply_overrides(read_yaml(path), overrides)
        cls = self.recipe_class(raw.get(self.key))
        return cls(build(cls.Config, raw))

    def train(self, path: str | Path | None, overrides=(), stop_at: int | None = None) -> dict[str, Any]:
        from factory.trainers.loop import run_training

        return run_training(self.load(path, overrides), stop_at=stop_at)
