"""Lower-face masks from landmarks and Gaussian-feathered compositing."""

from __future__ import annotations

import cv2
import numpy as np

from factory.faces.landmarks import LOWER_FACE


def lower_face_mask(landmark_sets: list[np.ndarray], size: int) -> np.ndarray:
    """One static (H, W) uint8 {0, 1} mask covering the lower face in every frame given.

    `landmark_sets` are (T, 478, 2) arrays in crop coordinates (the real clip and the clip whose
    mouth replaces it). The hull of the lower-face points over *all* frames clamps the jaw at its
    widest opening, so the mask's shape never traces the lips of any one frame: it leaks no lip
    shape, and it stays still over time.
    """
    pts = np.concatenate([np.asarray(s)[:, LOWER_FACE, :2].reshape(-1, 2) for s in landmark_sets])
    hull = cv2.convexHull(np.round(pts).astype(np.int32))
    mask = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    return mask


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    if pixels <= 0:
        return mask.copy()
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(mask.dtype)  # OpenCV 5.0 rejects bool


def feathered_alpha(mask: np.ndarray, sigma: float, dilation: int) -> np.ndarray:
    """Float alpha in [0, 1]: the mask blurred by a Gaussian, and exactly 0 outside its dilation.

    Multiplying by the dilated mask cuts the Gaussian's infinite tail, which is what guarantees
    that pixels outside the dilated mask are the original ones, bit for bit.
    """
    support = dilate(mask, dilation).astype(np.float32)
    if sigma <= 0:
        return mask.astype(np.float32)
    blurred = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigmaX=sigma, sigmaY=sigma)
    return np.clip(blurred * support, 0.0, 1.0)


def composite(background: np.ndarray, foreground: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Blend (..., H, W, 3) uint8 frames; where alpha == 0 the background is returned unchanged."""
    a = alpha[..., None]
    out = background.astype(np.float32) * (1.0 - a) + foreground.astype(np.float32) * a
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    keep = np.broadcast_to(alpha == 0, out.shape[:-1])
    out[keep] = np.broadcast_to(background, out.shape)[keep]
    return out
