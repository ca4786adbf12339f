"""Identity: cosine similarity (CSIM) between the synthetic and the real clip's face embeddings.

A pseudo pair must keep the speaker's identity: only the lips may differ. CSIM is the mean, over
`frames` frames sampled evenly, of the cosine between the two sides' embeddings of the same frame.

Thresholds (keep CSIM >= min_csim): ArcFace 0.85, X-Dub's. For dlib's embedding the default comes
from `bench/calibrate_identity.py` (see README, "Identity threshold"): X-Dub's reference point is
the mean similarity of one speaker across *different* segments; a pair shares the segment's pose,
light and background, so it must beat that. Run the script on your own data to re-calibrate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from factory.config import ConfigError
from factory.devices import free_accelerator_memory, pick_device
from factory.faces.embedders import build_embedder
from factory.metrics.csim import csim
from factory.metrics.frames import evenly_spaced
from factory.records import Record
from factory.stage import Filter, FilterConfig, FilterSpec, ModelPath

DEFAULT_MIN_CSIM = {"dlib": 0.96, "arcface": 0.85}  # dlib: bench/calibrate_identity.py


@dataclass
class IdentityConfig(FilterConfig):
    backend: str = "dlib"  # "dlib": ResNet weights shipped in face-recognition-models; "arcface": insightface ONNX
    arcface_path: str | None = None  # local ArcFace ONNX (e.g. w600k_r50.onnx), needed by backend=arcface
    min_csim: float | None = None  # keep when CSIM >= this; None: the backend's calibrated default
    frames: int = 8  # frames sampled evenly from each clip


def identity_thresholds(cfg: IdentityConfig) -> dict[str, tuple[str, float]]:
    if cfg.backend not in DEFAULT_MIN_CSIM:
        raise ConfigError(f"unknown filters.identity.backend {cfg.backend!r} (known: dlib, arcface)")
    floor = cfg.min_csim if cfg.min_csim is not None else DEFAULT_MIN_CSIM[cfg.backend]
    return {"csim": (">=", floor)}


def identity_model_paths(cfg: IdentityConfig) -> list[ModelPath]:
    return [("arcface_path", cfg.arcface_path, "file")] if cfg.backend == "arcface" else []


class IdentityFilter(Filter):
    name = "identity"
    requires = ("real_frames", "syn_frames")

    def __init__(self, cfg: IdentityConfig, soft: bool = False):
        super().__init__(identity_thresholds(cfg), cfg.resources, soft)
        self.cfg = cfg

    def setup(self) -> None:
        self.embedder = build_embedder(self.cfg.backend, self.cfg.arcface_path, pick_device())

    def teardown(self) -> None:
        self.embedder = None
        free_accelerator_memory()

    def score(self, record: Record) -> dict[str, float]:
        real, syn = record.media.real_frames, record.media.syn_frames
        idx = evenly_spaced(min(len(real), len(syn)), self.cfg.frames)
        emb = self.embedder.embed(np.concatenate([real[idx], syn[idx]]))
        return {"csim": round(csim(emb[: len(idx)], emb[len(idx):]), 4)}


SPEC = FilterSpec("identity", IdentityConfig, IdentityFilter, identity_thresholds, identity_model_paths)
