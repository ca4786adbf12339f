"""`factory train-dubber CONFIG [key=value ...]`: train a mask-free dubber on the factory's pairs.

The config's `recipe` key picks the recipe: `xdub-stage2` (X-Dub Stage II, one run per phase) or
`flashlips-refine` (FlashLips self-refinement: the mask-free editor, then the lip-pose flow model).
The rest of the file is that recipe's config (factory/trainers/recipes.py), with the pair manifests
under `manifests` and the shared loop settings under `loop`. A run's `loop.out/final` folder is the
trained dubber (`factory dub --checkpoint`) or the next phase's / stage's `init_from`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from factory.trainers.recipes import RecipeTable

DUBBER_RECIPES = RecipeTable("recipe", {
    "xdub-stage2": "factory.trainers.xdub_recipe:XDubRecipe",
    "flashlips-refine": "factory.trainers.flashlips_recipe:FlashLipsRecipe",
})


def load_recipe(path: str | Path | None, overrides=()):
    return DUBBER_RECIPES.load(path, overrides)


def train_dubber(path: str | Path | None, overrides=(), stop_at: int | None = None) -> dict[str, Any]:
    return DUBBER_RECIPES.train(path, overrides, stop_at)
