"""The generator interface and its registry.

A generator re-renders the lower face of the real clip so the lips follow the alternative clip's
audio. It only *renders*: the generate stage builds the mask and composites the result back, so
every generator, learned or not, gets the same guarantee that pixels outside the dilated mask are
the original ones. Third-party generators register under the `factory.generators` entry point.

A generator owns its settings (`Settings`, a dataclass validated from `generate.settings`) and
is saved and loaded diffusers-style: `save_pretrained(dir)` writes `config.json` (name, version,
settings) and, for learned generators, `model.safetensors`; `from_pretrained(dir)` reads them
back (`generate.weights` names such a folder). Weights never come from anywhere but that folder.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"


@dataclass
class GenerationInput:
    """One clip to re-dub. Arrays are in the aligned crop's pixels (S x S)."""

    key: str
    real_frames: np.ndarray  # (T, S, S, 3) uint8
    real_landmarks: np.ndarray  # (T, 478, 2) ingest landmarks, crop pixels
    real_audio: np.ndarray  # int16 mono: what the real lips say
    alt_frames: np.ndarray  # the same speaker's other clip, same layout
    alt_landmarks: np.ndarray
    alt_audio: np.ndarray  # int16 mono: what the synthetic lips should say
    masks: np.ndarray  # (T, S, S) uint8 {0,1}: per frame, where the render is used (alpha > 0; jaw clamped)
    occlusion: np.ndarray | None = None  # (T, S, S) bool occluders in front of the face: kept real
    alt_occlusion: np.ndarray | None = None  # (T, S, S) bool occluders in the alternative clip's frames
    alt_registration: np.ndarray | None = None  # (T, 2, 3) alt crop -> real crop, fitted on the nose per frame
    reference_frames: np.ndarray | None = None  # (N, S, S, 3) frames of the real clip for identity/texture
    motion_frames: np.ndarray | None = None  # (M, S, S, 3) frames just before the clip, when contiguous
    audio_features: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. whisper features, per generator
    fps: int = 25
    sample_rate: int = 16000
    seed: int = 0  # per pair: same seed, same output


@dataclass
class NoSettings:
    """A generator without settings of its own."""


class Generator:
    name = "base"
    version = "0"
    Settings: type = NoSettings
    reference_frames = 0  # how many reference frames the stage should pass (X-Dub: 4)
    motion_frames = 0  # how many preceding frames the stage should pass (X-Dub: 5)
    needs_weights = False  # learned generators: True (a run without generate.weights is refused up front)

    def __init__(self, settings: Any = None):
        self.settings = settings if settings is not None else self.Settings()

    # -- weights ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any] | None:
        """Tensors to save (a learned generator returns its module's state dict); None: no weights."""
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise TypeError(f"generator '{self.name}' has no weights to load")

    def save_pretrained(self, path: str | Path) -> None:
        from factory.files import atomic_write

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = self.state_dict()
        if state is not None:
            from safetensors.torch import save_file

            save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path / WEIGHTS_NAME))
        config = {"generator": self.name, "version": self.version, "settings": dataclasses.asdict(self.settings)}
        atomic_write(path / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True))

    @classmethod
    def from_pretrained(cls, path: str | Path, key: str = "generate.weights", settings: Any = None) -> "Generator":
        """The generator saved in `path`, with its saved settings (or `settings`, already
        validated, e.g. the saved ones with a run's overrides on top)."""
        from factory.config import build

        config = read_generator_config(path, cls.name, key)
        if settings is None:
            settings = build(cls.Settings, config.get("settings") or {}, prefix=f"{key}/{CONFIG_NAME}:")
        generator = cls(settings)
        path = Path(path)
        if (path / WEIGHTS_NAME).is_file():
            from safetensors.torch import load_file

            generator.load_state_dict(load_file(str(path / WEIGHTS_NAME)))
        return generator

    # -- rendering -------------------------------------------------------------------------------

    def setup(self, device: str) -> None:
        """Move weights to `device` (the one Ray assigned, or "cpu")."""

    def generate_batch(self, inputs: list[GenerationInput]) -> list[np.ndarray]:
        """One (T, S, S, 3) uint8 array per input; only the masked region is used. Learned
        generators override this to batch on the device."""
        return [self.generate(inp) for inp in inputs]

    def generate(self, inp: GenerationInput) -> np.ndarray:
        raise NotImplementedError


def read_generator_config(path: str | Path, name: str, key: str = "generate.weights") -> dict[str, Any]:
    """A generator folder's config.json, checked to be `name`'s; ConfigError naming `key` otherwise."""
    from factory.config import ConfigError

    path = Path(path)
    if not (path / CONFIG_NAME).is_file():
        raise ConfigError(f"{key} = {str(path)!r} is not a generator folder (no {CONFIG_NAME}; "
                          "write one with save_pretrained or `factory train-generator`)")
    config = json.loads((path / CONFIG_NAME).read_text())
    if config.get("generator") != name:
        raise ConfigError(f"{key} = {str(path)!r} holds generator {config.get('generator')!r}, not {name!r}")
    return config


_REGISTRY: dict[str, type[Generator]] = {}


def register(cls: type[Generator]) -> type[Generator]:
    _REGISTRY[cls.name] = cls
    return cls


def generator_class(name: str) -> type[Generator]:
    """The generator registered as `name`: already imported, or from the `factory.generators` entry point."""
    if name not in _REGISTRY:
        for ep in entry_points(group="factory.generators"):
            if ep.name == name:
                register(ep.load())
    if name not in _REGISTRY:
        from factory.config import ConfigError

        raise ConfigError(f"unknown generator '{name}' (config key generate.generator; "
                          f"known: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def generator_names() -> list[str]:
    """Every generator that `generator_class` can build: the built-in ones and the entry points."""
    return sorted(set(_REGISTRY) | {ep.name for ep in entry_points(group="factory.generators")})
