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


def transform_scale(transform: np.ndarray) -> float:
    """The similarity's uniform scale (crop pixels per frame pixel)."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(transform, np.float64)[:, :2]))))


def antialias_sigma(scale: float) -> float:
    """Gaussian sigma (frame pixels) that band-limits a frame before shrinking it by `scale`.

    An area average over 1/scale pixels is the reference; bilinear sampling already averages a
    little, hence sqrt(1/s^2 - 1). The 0.35 was measured against cv2.resize(INTER_AREA) on white
    noise and on scikit-image's gravel texture (bench numbers in tests/test_crop_quality.py).
    """
    return 0.35 * float(np.sqrt(max(1.0 / scale**2 - 1.0, 0.0)))


def source_box(transform: np.ndarray, crop_size: int, shape: tuple[int, ...], pad: float) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the part of a frame of this shape that the crop is drawn from, padded."""
    inv = cv2.invertAffineTransform(np.asarray(transform, np.float64))
    corners = np.array([[0, 0], [crop_size, 0], [0, crop_size], [crop_size, crop_size]], np.float64)
    pts = apply(inv, corners)
    h, w = shape[:2]
    x0, y0 = np.floor(pts.min(0) - pad).astype(int)
    x1, y1 = np.ceil(pts.max(0) + pad).astype(int)
    return max(0, x0), max(0, y0), min(w, max(x1, 1)), min(h, max(y1, 1))


def warp_crop(frame: np.ndarray, transform: np.ndarray, crop_size: int) -> np.ndarray:
    """The aligned crop. Shrinking is antialiased: warpAffine treats INTER_AREA as bilinear, so
    the part of the frame the crop comes from is Gaussian-blurred first (only that part: a 1080p
    frame is not blurred whole). Outside the frame is black, never mirrored content."""
    transform = np.asarray(transform, np.float64)
    scale = transform_scale(transform)
    if scale >= 1.0:
        return cv2.warpAffine(frame, transform.astype(np.float32), (crop_size, crop_size),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    sigma = antialias_sigma(scale)
    x0, y0, x1, y1 = source_box(transform, crop_size, frame.shape, pad=3 * sigma + 2)
    if x1 <= x0 or y1 <= y0:  # the crop lies wholly outside the frame
        return np.zeros((crop_size, crop_size) + frame.shape[2:], frame.dtype)
    region = cv2.GaussianBlur(np.ascontiguousarray(frame[y0:y1, x0:x1]), (0, 0), sigma,
                              borderType=cv2.BORDER_REPLICATE)
    shifted = transform.copy()
    shifted[:, 2] += transform[:, :2] @ [x0, y0]  # the region's origin is (x0, y0) of the frame
    # the region may end before the crop's padded preimage only where the frame itself ends
    return cv2.warpAffine(region, shifted.astype(np.float32), (crop_size, crop_size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def outside_share(transform: np.ndarray, crop_size: int, frame_shape: tuple[int, ...], grid: int = 64) -> float:
    """Share of the crop (0..1) whose source lies outside the frame: black, not face. Sampled on a
    grid x grid lattice of crop pixel centres (1/4096 resolution), far cheaper than a warp."""
    inverse = cv2.invertAffineTransform(np.asarray(transform, np.float64))
    h, w = frame_shape[:2]

    def inside(src: np.ndarray) -> np.ndarray:
        return (src[:, 0] >= -0.5) & (src[:, 0] <= w - 0.5) & (src[:, 1] >= -0.5) & (src[:, 1] <= h - 0.5)

    corners = np.array([[0, 0], [crop_size, 0], [0, crop_size], [crop_size, crop_size]], np.float64)
    if inside(apply(inverse, corners)).all():  # the usual case: the crop's preimage (convex) lies in the frame
        return 0.0
    centres = (np.arange(grid) + 0.5) * crop_size / grid - 0.5
    xs, ys = np.meshgrid(centres, centres)
    return float(1.0 - inside(apply(inverse, np.stack([xs.ravel(), ys.ravel()], 1))).mean())
