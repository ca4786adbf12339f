"""Mouth landmark distance (LMD) between two landmark tracks of the same clip.

Unit: the mean Euclidean distance, over the 40 MediaPipe lip points and over frames, between the
two clips' landmarks after each frame is aligned (Umeyama similarity on the rigid points) to the
canonical template drawn at 256x256 pixels. So LMD is "pixels of a 256-px canonical face", the
same whatever the crop size. X-Dub rejects pairs below 1.0: their lips barely differ, so the pair
teaches nothing. Both sides must be measured by the same detector on the same crops.
"""

from __future__ import annotations

import numpy as np

from factory.faces.align import align_to_template
from factory.faces.landmarks import MOUTH

LMD_SCALE = 256  # the canonical face's size in pixels: LMD's unit


def mouth_distance(a: np.ndarray, b: np.ndarray) -> float:
    """LMD between two (T, 478, 2) landmark tracks; frames missing (NaN) in either are skipped,
    NaN when no frame has a face on both sides."""
    dists = []
    for pa, pb in zip(a, b):
        if np.isnan(pa).any() or np.isnan(pb).any():
            continue
        qa, qb = align_to_template(pa, LMD_SCALE), align_to_template(pb, LMD_SCALE)
        dists.append(np.linalg.norm(qa[MOUTH] - qb[MOUTH], axis=1).mean())
    return float(np.mean(dists)) if dists else float("nan")
