"""Similarity alignment (Umeyama) of faces to the canonical template, and the crops it gives."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from factory.faces.landmarks import RIGID


@lru_cache(maxsize=1)
def unit_template() -> np.ndarray:
    """(478, 2) canonical landmarks in the unit square (see scripts/make_face_template.py)."""
    return np.load(Path(__file__).with_name("template_478.npy"))


def template(crop_size: int) -> np.ndarray:
    return unit_template() * crop_size


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) taking src to dst.

    Umeyama (1991). Returns a 2x3 matrix A with dst ~= src @ A[:, :2].T + A[:, 2].
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    var_s = (s**2).sum() / len(src)
    scale = np.trace(np.diag(sig) @ sign) / var_s if var_s > 0 else 1.0
    out = np.zeros((2, 3))
    out[:, :2] = scale * rot
    out[:, 2] = mu_d - scale * rot @ mu_s
    return out


def apply(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ transform[:, :2].T + transform[:, 2]


def frame_to_crop(landmarks: np.ndarray, crop_size: int) -> np.ndarray:
    """Transform taking frame pixels to canonical crop pixels, fitted on the rigid points."""
    return umeyama(landmarks[RIGID, :2], template(crop_size)[RIGID])


def align_to_template(landmarks: np.ndarray, crop_size: int) -> np.ndarray:
    """Landmarks (N, 2+) mapped into the canonical crop by a similarity fitted on the rigid points."""
    return apply(frame_to_crop(landmarks, crop_size), landmarks[:, :2])


def warp_crop(frame: np.ndarray, transform: np.ndarray, crop_size: int) -> np.ndarray:
    return cv2.warpAffine(frame, transform.astype(np.float32), (crop_size, crop_size),
                          flags=cv2.INTER_AREA if transform[0, 0] < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT101)
