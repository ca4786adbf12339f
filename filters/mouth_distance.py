"""Mouth landmark distance (LMD) between the synthetic and the real clip.

Unit: the mean Euclidean distance, over the 40 MediaPipe lip points and over frames, between the
two clips' landmarks after each frame is aligned (Umeyama similarity on the rigid points) to the
canonical template drawn at 256x256 pixels. So LMD is "pixels of a 256-px canonical face", the
same whatever the crop size. X-Dub rejects pairs below 1.0: their lips barely differ, so the pair
teaches nothing. Both sides are measured by the same detector on the same crops.
"""

from __future__ import annotations

import numpy as np

from factory.config import MouthDistanceConfig
from factory.faces.align import align_to_template
from factory.faults import fault_point
from factory.faces.landmarks import MOUTH, NUM_LANDMARKS, FaceLandmarker
from factory.records import Record
from factory.stage import Filter

LMD_SCALE = 256


def track(frames: np.ndarray) -> np.ndarray:
    """(T, 478, 2) landmarks on a clip of crops; NaN where no face is found."""
    out = np.full((len(frames), NUM_LANDMARKS, 2), np.nan, np.float32)
    with FaceLandmarker(static=False, max_faces=1) as lm:
        for t, frame in enumerate(frames):
            faces = lm.detect(frame)
            if faces:
                out[t] = faces[0][:, :2]
    return out


def mouth_distance(a: np.ndarray, b: np.ndarray) -> float:
    """LMD between two (T, 478, 2) landmark tracks; frames missing in either are skipped."""
    dists = []
    for pa, pb in zip(a, b):
        if np.isnan(pa).any() or np.isnan(pb).any():
            continue
        qa, qb = align_to_template(pa, LMD_SCALE), align_to_template(pb, LMD_SCALE)
        dists.append(np.linalg.norm(qa[MOUTH] - qb[MOUTH], axis=1).mean())
    return float(np.mean(dists)) if dists else float("nan")


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
