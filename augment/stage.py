"""Choose which kept pairs are augmented, and how; record it, leave the pair clean.

The pair's frames are never changed here: the parameters go into the sample's meta.json
(meta["augment"]) and augment/replay.py applies them at training time, identically to both sides.
So the shards hold the clean pair, and a trainer can take it with or without the augmentation.

Which pairs, which augmentation and its parameters come from a generator seeded by the run's
seed and the pair's key: reruns and resumed runs record exactly the same augmentations.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from augment import occlusion, relight
from augment.face_geometry import face_points
from factory.records import Record
from factory.stage import Resources, Stage


@dataclass
class AugmentConfig:
    # share of kept pairs given *each* enabled augmentation (X-Dub: ~5 % each); the kinds never
    # overlap, so above 1/kinds it is capped and every pair is augmented
    share: float = 0.05
    occlusion: bool = True  # moving synthetic occluders: textured shapes, photo cut-outs, hand-like blobs
    relight: bool = True  # face relighting: static colour/intensity, or a moving coloured light
    resources: Resources = field(default_factory=lambda: Resources(pool_size=2))


class AugmentStage(Stage):
    name = "augment"
    requires = ("real_frames", "clip_landmarks")
    provides = ()  # meta only: the clean pair stays as it is

    def __init__(self, cfg: AugmentConfig, seed: int):
        super().__init__(cfg.resources)
        self.cfg, self.seed = cfg, seed
        self.kinds = [k for k, on in (("occlusion", cfg.occlusion), ("relight", cfg.relight)) if on]

    def rng_for(self, key: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, zlib.crc32(key.encode())])

    def choose(self, rng: np.random.Generator) -> str | None:
        """One uniform draw split into `share`-wide slices, one per kind: each kind gets `share`."""
        if not self.kinds or self.cfg.share <= 0:
            return None
        share = min(self.cfg.share, 1 / len(self.kinds))
        slot = int(rng.random() / share)
        return self.kinds[slot] if slot < len(self.kinds) else None

    def process(self, records: list[Record]) -> list[Record]:
        for record in records:
            rng = self.rng_for(record.key)
            kind = self.choose(rng)
            media = record.media
            if kind == "occlusion":
                params = occlusion.sample_params(rng)
            elif kind == "relight":
                n = len(media.real_frames)
                marks = media.clip_landmarks
                face = None if marks is None or len(marks) < n else face_points(marks[:n])
                if face is None:  # no face to light: leave the pair un-augmented
                    continue
                params = relight.sample_params(rng, *face)
            else:
                continue
            n, size = media.real_frames.shape[:2]
            record.meta["augment"] = {"kind": kind, "frames": int(n), "size": int(size), "params": params.to_dict()}
        return records
