"""Per-frame registration of one clip's face onto another's, on the nose.

Both clips are aligned to the canonical template, but by a transform smoothed over time, so on
real footage the alternative clip's face can sit a few pixels off the real one from frame to
frame; a mouth pasted that way makes the seam under the nose swim. The registration is fitted on
the *pixels* of the nose (ECC, a rotation and shift per frame), not on its landmarks: Face Mesh
moves the nose-base landmarks by up to ~5 px as the mouth opens while the nose itself stays put
(measured on the demo clips), so a landmark fit would misplace the paste by as much and tie its
position to the real clip's speech.
"""

from __future__ import annotations

import cv2
import numpy as np

from factory.faces.align import apply

# The nose from the bridge to the base, tip and alae: rigid with the skull, right above the
# pasted region, and untouched by the jaw and lips.
NOSE_POINTS = [195, 5, 4, 1, 2, 98, 327, 129, 358, 64, 294, 48, 278, 219, 439]
NOSE_BASE = [2, 98, 327]  # subnasale and the alar bases: where the paste meets the real face
MAX_SHIFT = 0.05  # of the crop side; a larger answer is a failed fit (kept unregistered)
MAX_TURN = np.deg2rad(5)
_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-4)


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)


def register_frame(source: np.ndarray, target: np.ndarray, target_landmarks: np.ndarray) -> np.ndarray:
    """2x3 rigid transform taking `source` (S, S, 3) pixels onto `target`'s, fitted on the target's nose."""
    size = target.shape[0]
    scale = size / 256
    nose = np.zeros(target.shape[:2], np.uint8)
    cv2.fillConvexPoly(nose, cv2.convexHull(np.round(target_landmarks[NOSE_POINTS, :2]).astype(np.int32)), 255)
    nose = cv2.dilate(nose, np.ones((2 * round(3 * scale) + 1,) * 2, np.uint8))  # the alar grooves and nose base edge
    ys, xs = np.nonzero(nose)
    if len(ys) == 0:
        return np.eye(2, 3)
    pad = round(8 * scale)
    y0, x0 = max(ys.min() - pad, 0), max(xs.min() - pad, 0)
    y1, x1 = min(ys.max() + pad + 1, size), min(xs.max() + pad + 1, size)
    warp = np.eye(2, 3, dtype=np.float32)
    try:  # warp maps target-ROI coordinates to source-ROI coordinates
        _, warp = cv2.findTransformECC(_gray(target[y0:y1, x0:x1]), _gray(source[y0:y1, x0:x1]), warp,
                                       cv2.MOTION_EUCLIDEAN, _CRITERIA, nose[y0:y1, x0:x1], 1)
    except cv2.error:  # no convergence (a flat or occluded nose): leave the frame as aligned
        return np.eye(2, 3)
    roi = np.float64([[1, 0, x0], [0, 1, y0], [0, 0, 1]])
    target_to_source = roi @ np.vstack([warp, [0, 0, 1]]) @ np.linalg.inv(roi)
    move = cv2.invertAffineTransform(target_to_source[:2])
    if np.hypot(*move[:, 2] - (np.eye(2) - move[:, :2]) @ [size / 2, size / 2]) > MAX_SHIFT * size or \
            abs(np.arctan2(move[1, 0], move[0, 0])) > MAX_TURN:
        return np.eye(2, 3)
    return move


def register(source: np.ndarray, target: np.ndarray, target_landmarks: np.ndarray) -> np.ndarray:
    """(T, 2, 3): per frame, the transform taking `source` frames (T, S, S, 3) onto `target`'s."""
    return np.stack([register_frame(s, t, lm) for s, t, lm in zip(source, target, target_landmarks)])


def move_points(landmarks: np.ndarray, transforms: np.ndarray) -> np.ndarray:
    return np.stack([apply(m, p[:, :2]) for m, p in zip(transforms, landmarks)])


def move_frames(frames: np.ndarray, transforms: np.ndarray, nearest: bool = False) -> np.ndarray:
    """Warp (T, S, S, ...) frames or masks by the per-frame transforms (edges mirrored, not black)."""
    if frames.dtype == bool:  # OpenCV warps numbers, not booleans
        return move_frames(frames.astype(np.uint8), transforms, nearest=True).astype(bool)
    size = frames.shape[2], frames.shape[1]
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    out = [cv2.warpAffine(f, m, size, flags=flags, borderMode=cv2.BORDER_REFLECT) for f, m in zip(frames, transforms)]
    return np.stack(out).astype(frames.dtype)
