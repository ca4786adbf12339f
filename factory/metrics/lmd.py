"""Mouth landmark distance (LMD) between two landmark tracks.

Unit: the mean Euclidean distance, over the 40 MediaPipe lip points and over frames, between the
two tracks' landmarks after each frame is aligned (Umeyama similarity on the rigid points) to the
canonical template drawn at 256x256 pixels. So LMD is "pixels of a 256-px canonical face", the
same whatever the crop size. X-Dub rejects pairs below 1.0: their lips barely differ.
"""

from __future__ import annotations

import numpy as np

from factory.faces.align import align_to_template
from factory.faces.landmarks import MOUTH

LMD_SCALE = 256


def mouth_distance(a: np.ndarray, b: np.ndarray) -> float:
    """LMD between two (T, 478, 2) landmark tracks; frames missing in either are skipped."""
    dists = []
    for pa, pb in zip(a, b):
        if np.isnan(pa).any() or np.isnan(pb).any():
            continue
        qa, qb = align_to_template(pa, LMD_SCALE), align_to_template(pb, LMD_SCALE)
        dists.append(np.linalg.norm(qa[MOUTH] - qb[MOUTH], axis=1).mean())
    return float(np.mean(dists)) if dists else float("nan")
