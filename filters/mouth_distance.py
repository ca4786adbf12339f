"""Mouth landmark distance (LMD) between the synthetic and the real clip.

Both sides are re-tracked by the same detector on the output crops (factory.stages.track); the
unit (pixels of a 256-px canonical face) is documented in factory/metrics/lmd.py. X-Dub rejects
pairs below 1.0: their lips barely differ, so the pair teaches nothing. A synthetic clip in which
the face is lost on more than a fifth of the frames is rejected too (`syn_face_ratio`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from factory.faults import fault_point
from factory.metrics.lmd import mouth_distance
from factory.records import Record
from factory.stage import Filter, FilterConfig, FilterSpec


@dataclass
class MouthDistanceConfig(FilterConfig):
    min_lmd: float = 1.0  # X-Dub's rule; unit in factory/metrics/lmd.py


def mouth_distance_thresholds(cfg: MouthDistanceConfig) -> dict[str, tuple[str, float]]:
    return {"syn_face_ratio": (">=", 0.8), "lmd": (">=", cfg.min_lmd)}


class MouthDistanceFilter(Filter):
    name = "mouth_distance"
    requires = ("real_tracked", "syn_tracked")

    def __init__(self, cfg: MouthDistanceConfig, soft: bool = False):
        super().__init__(mouth_distance_thresholds(cfg), cfg.resources, soft)

    def score(self, record: Record) -> dict[str, float]:
        fault_point("filter", record.key)
        real, syn = record.media.real_tracked, record.media.syn_tracked
        found = ~np.isnan(syn).any(axis=(1, 2))
        return {"syn_face_ratio": float(found.mean()), "lmd": round(mouth_distance(real, syn), 4)}


SPEC = FilterSpec("mouth_distance", MouthDistanceConfig, MouthDistanceFilter, mouth_distance_thresholds)
