"""Mouth landmark distance (LMD) between the synthetic and the real clip.

The filter tracks both sides' landmarks with the same detector on the same crops and keeps pairs
whose lips differ enough (X-Dub: LMD >= 1.0). The maths and its unit (pixels of a 256-px
canonical face) live in factory/metrics/lmd.py, shared with evaluation.
"""

from __future__ import annotations

import numpy as np

from factory.config import MouthDistanceConfig
from factory.faults import fault_point
from factory.faces.landmarks import NUM_LANDMARKS, FaceLandmarker
from factory.metrics.lmd import mouth_distance
from factory.records import Record
from factory.stage import Filter


def track(frames: np.ndarray) -> np.ndarray:
    """(T, 478, 2) landmarks on a clip of crops; NaN where no face is found."""
    out = np.full((len(frames), NUM_LANDMARKS, 2), np.nan, np.float32)
    with FaceLandmarker(static=False, max_faces=1) as lm:
        for t, frame in enumerate(frames):
            faces = lm.detect(frame)
            if faces:
                out[t] = faces[0][:, :2]
    return out


def mouth_distance_thresholds(cfg: MouthDistanceConfig) -> dict[str, tuple[str, float]]:
    return {"syn_face_ratio": (">=", 0.8), "lmd": (">=", cfg.min_lmd)}


class MouthDistanceFilter(Filter):
    name = "mouth_distance"

    def __init__(self, cfg: MouthDistanceConfig):
        super().__init__(mouth_distance_thresholds(cfg))

    def score(self, record: Record) -> dict[str, float]:
        fault_point("filter", record.key)
        real = track(record.media["real_frames"])
        syn = track(record.media["syn_frames"])
        record.media["real_landmarks"], record.media["syn_landmarks"] = real, syn
        found = ~np.isnan(syn).any(axis=(1, 2))
        return {"syn_face_ratio": float(found.mean()), "lmd": round(mouth_distance(real, syn), 4)}
