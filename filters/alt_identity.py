"""Alternative identity: is the lower face pasted in the same person's?

The identity filter compares the synthetic and the real clip, which share the whole upper face:
a pair whose alternative clip shows *another* person (a missed cut, a look-alike speaker group)
passes it with the other person's chin, teeth and lips. This filter compares the real clip with
the clip the new lower face comes from, on their face embeddings from ingest (dlib, one per
clip: the same person ~0.95+, two people <= ~0.89, README "Identity threshold"). Pairs whose clips
carry no embedding (ingest.identity_frames=0) get no score and pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from factory.records import Record
from factory.stage import Filter, FilterConfig, FilterSpec


@dataclass
class AltIdentityConfig(FilterConfig):
    min_alt_csim: float = 0.92  # keep when the real and the alternative clip's faces agree this much


def alt_identity_thresholds(cfg: AltIdentityConfig) -> dict[str, tuple[str, float]]:
    return {"alt_csim": (">=", cfg.min_alt_csim)}


class AltIdentityFilter(Filter):
    name = "alt_identity"

    def __init__(self, cfg: AltIdentityConfig, soft: bool = False):
        super().__init__(alt_identity_thresholds(cfg), cfg.resources, soft)

    def score(self, record: Record) -> dict[str, float]:
        real, alt = record.meta.get("identity"), record.meta.get("alt_identity")
        if real is None or alt is None:
            return {}
        return {"alt_csim": round(float(np.dot(real, alt)), 4)}


SPEC = FilterSpec("alt_identity", AltIdentityConfig, AltIdentityFilter, alt_identity_thresholds)
