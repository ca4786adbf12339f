"""Augment a configurable share of pairs, with the *same* transform on both sides.

Which pairs, which augmentation and its parameters come from a generator seeded by the run's
seed and the pair's key: reruns and resumed runs augment exactly the same pairs the same way.
The parameters go into the sample's meta.json, where they reproduce (or undo) the transform.
"""

from __future__ import annotations

import zlib

import numpy as np

from dataclasses import dataclass, field

from augment import occlusion, relight
from factory.records import Record
from factory.stage import Resources, Stage


@dataclass
class AugmentConfig:
    share: float = 0.05  # fraction of kept pairs augmented (the same transform on both sides)
    occlusion: bool = True  # moving synthetic occluders: textured shapes, hand-like blobs
    relight: bool = True  # static colour/intensity, or a moving coloured light
    resources: Resources = field(default_factory=lambda: Resources(pool_size=2))


class AugmentStage(Stage):
    name = "augment"
    requires = ("real_frames", "syn_frames")
    provides = ("real_frames", "syn_frames")

    def __init__(self, cfg: AugmentConfig, seed: int):
        super().__init__(cfg.resources)
        self.cfg, self.seed = cfg, seed
        self.kinds = [k for k, on in (("occlusion", cfg.occlusion), ("relight", cfg.relight)) if on]

    def rng_for(self, key: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, zlib.crc32(key.encode())])

    def process(self, records: list[Record]) -> list[Record]:
        for record in records:
            rng = self.rng_for(record.key)
            if not self.kinds or rng.random() >= self.cfg.share:
                continue
            kind = self.kinds[int(rng.integers(len(self.kinds)))]
            media = record.media
            real, syn = media.real_frames, media.syn_frames
            if kind == "occlusion":
                params = occlusion.sample_params(rng)
                media.real_frames, _ = occlusion.apply(real, params)
                media.syn_frames, _ = occlusion.apply(syn, params)
            else:
                params = relight.sample_params(rng)
                media.real_frames = relight.apply(real, params)
                media.syn_frames = relight.apply(syn, params)
            record.meta["augment"] = {"kind": kind, "params": params.to_dict()}
        return records
