"""Identity: cosine similarity (CSIM) between the synthetic and the real clip's face embeddings.

A pseudo pair must keep the speaker's identity: only the lips may differ. CSIM is the mean, over
`frames` frames sampled evenly, of the cosine between the two sides' embeddings of the same frame.

Thresholds (keep CSIM >= min_csim): ArcFace 0.85, X-Dub's. For dlib's embedding the default comes
from `bench/calibrate_identity.py` (see README, "Identity threshold"): X-Dub's reference point is
the mean similarity of one speaker across *different* segments; a pair shares the segment's pose,
light and background, so it must beat that. Run the script on your own data to re-calibrate.
"""

from __future__ import annotations

import numpy as np

from factory.config import ConfigError, IdentityConfig
from factory.devices import pick_device
from factory.faces.embedders import build_embedder
from factory.metrics.csim import csim
from factory.metrics.frames import evenly_spaced
from factory.records import Record
from factory.stage import Filter, Resources

DEFAULT_MIN_CSIM = {"dlib": 0.96, "arcface": 0.85}  # dlib: bench/calibrate_identity.py


def identity_thresholds(cfg: IdentityConfig) -> dict[str, tuple[str, float]]:
    if cfg.backend not in DEFAULT_MIN_CSIM:
        raise ConfigError(f"unknown filters.identity.backend {cfg.backend!r} (known: dlib, arcface)")
    floor = cfg.min_csim if cfg.min_csim is not None else DEFAULT_MIN_CSIM[cfg.backend]
    return {"csim": (">=", floor)}


class IdentityFilter(Filter):
    name = "identity"

    def __init__(self, cfg: IdentityConfig):
        super().__init__(identity_thresholds(cfg), Resources(
            num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, pool_size=cfg.pool_size))
        self.cfg = cfg

    def setup(self) -> None:
        self.embedder = build_embedder(self.cfg.backend, self.cfg.arcface_path, pick_device())

    def score(self, record: Record) -> dict[str, float]:
        real, syn = record.media["real_frames"], record.media["syn_frames"]
        idx = evenly_spaced(min(len(real), len(syn)), self.cfg.frames)
        emb = self.embedder.embed(np.concatenate([real[idx], syn[idx]]))
        return {"csim": round(csim(emb[: len(idx)], emb[len(idx):]), 4)}
