"""Which pixels the generator may change, given a face mask and occluder masks (X-Dub).

The inpainting mask is M_inp = not M_face or M_occ: everything outside the face, and every occluder
in front of it, stays real. Its complement, M_face and not M_occ, is what may be re-rendered.
"""

from __future__ import annotations

import numpy as np


def editable_mask(face_mask: np.ndarray, occlusion: np.ndarray) -> np.ndarray:
    """(T, S, S) bool, M_face and not M_occ. `face_mask` is one (S, S) {0, 1} mask or (T, S, S)."""
    return np.asarray(face_mask).astype(bool) & ~np.asarray(occlusion, bool)


def inpaint_mask(face_mask: np.ndarray, occlusion: np.ndarray) -> np.ndarray:
    """(T, S, S) bool, X-Dub's M_inp = not M_face or M_occ: the pixels kept real."""
    return ~np.asarray(face_mask).astype(bool) | np.asarray(occlusion, bool)


def apply_occlusion(alpha: np.ndarray, occlusion: np.ndarray) -> np.ndarray:
    """(T, S, S) float32 compositing weight: the feathered face `alpha` (S, S), zero on occluders.

    `factory.faces.masks.composite(real, rendered, result)` takes it as is (its alpha broadcasts
    over frames) and returns the real pixel bit for bit wherever the weight is 0, so occluder
    pixels are exactly the real ones. The cut at the occluder's edge is hard on purpose: a feather
    there would blend rendered skin into the hand.
    """
    keep = 1.0 - np.asarray(occlusion, bool).astype(np.float32)
    return (np.asarray(alpha, np.float32) * keep).astype(np.float32)
