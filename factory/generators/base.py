"""The generator interface and its registry.

A generator re-renders the lower face of the real clip so the lips follow the alternative clip's
audio. It only *renders*: the generate stage builds the mask and composites the result back, so
every generator, learned or not, gets the same guarantee that pixels outside the dilated mask are
the original ones. Third-party generators register under the `factory.generators` entry point.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points

import numpy as np

from factory.config import GenerateConfig


@dataclass
class GenerationInput:
    real_frames: np.ndarray  # (T, S, S, 3) uint8 aligned crops
    real_landmarks: np.ndarray  # (T, 478, 2) crop pixels
    alt_frames: np.ndarray  # the same speaker's other clip, same layout
    alt_landmarks: np.ndarray
    alt_audio: np.ndarray  # int16 at 16 kHz, what the synthetic lips should say
    mask: np.ndarray  # (S, S) uint8 {0,1}: region to re-render (lower face, jaw clamped)
    occlusion: np.ndarray | None = None  # (T, S, S) bool occluders in front of the face: kept as real


class Generator:
    name = "base"
    version = "0"

    def __init__(self, cfg: GenerateConfig):
        self.cfg = cfg

    def setup(self, device: str) -> None:
        """Load weights (from `generate.weights`) onto `device`."""

    def generate(self, inp: GenerationInput) -> np.ndarray:
        """(T, S, S, 3) uint8 frames; only the masked region is used."""
        raise NotImplementedError


_REGISTRY: dict[str, type[Generator]] = {}


def register(cls: type[Generator]) -> type[Generator]:
    _REGISTRY[cls.name] = cls
    return cls


def build_generator(cfg: GenerateConfig) -> Generator:
    import factory.generators.transplant  # noqa: F401  (registers the built-in generator)

    if cfg.generator not in _REGISTRY:
        for ep in entry_points(group="factory.generators"):
            if ep.name == cfg.generator:
                register(ep.load())
    if cfg.generator not in _REGISTRY:
        raise ValueError(f"unknown generator '{cfg.generator}' (config key generate.generator; "
                         f"known: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[cfg.generator](cfg)
