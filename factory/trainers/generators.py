"""`factory train-generator CONFIG [key=value ...]`: train a learned generator on clip stores.

The config's `generator` key picks the recipe (dit_inpainter: X-Dub Stage I; latent_editor:
FlashLips Stage 1); the rest of the file is that recipe's config (factory/trainers/recipes.py).
The recipe's `loop.out/final` folder is a generator folder: `generate.generator=<name>
generate.weights=<it>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from factory.trainers.recipes import RecipeTable

GENERATOR_RECIPES = RecipeTable("generator", {
    "dit_inpainter": "factory.trainers.dit_recipe:DiTInpainterRecipe",
    "latent_editor": "factory.trainers.editor_recipe:LatentEditorRecipe",
})


def load_recipe(path: str | Path | None, overrides=()):
    return GENERATOR_RECIPES.load(path, overrides)


def train_generator(path: str | Path | None, overrides=(), stop_at: int | None = None) -> dict[str, Any]:
    return GENERATOR_RECIPES.train(path, overrides, stop_at)
