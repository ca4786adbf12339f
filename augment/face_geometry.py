"""Where the face is and which way its surface faces, for relighting (from the real clip's landmarks).

Region: the hull of MediaPipe's face-oval landmarks, feathered *inwards*, so every pixel outside
the hull (hair, neck, background) is untouched. Surface: a dome over the oval (an ellipsoid with
the oval's second moments) whose apex is pulled towards the nose tip by the head's turn, so the
light falls on the side of the face that turns towards it and moves with the face.

Only the oval and the nose tip are kept per frame: they are stored in the augmentation's
parameters, so replaying a relight needs no landmarks.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from factory.faces.align import unit_template

# MediaPipe's FACEMESH_FACE_OVAL, in order around the face
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
NOSE_TIP = 1
FEATHER = 0.06  # feather sigma as a share of the face's size (sqrt of the hull's area)


def face_points(landmarks: np.ndarray) -> tuple[list, list] | None:
    """Per frame: the oval's points and the nose tip, rounded to 0.1 px (JSON-sized, and replay
    reads exactly these numbers). Frames with lost landmarks borrow the nearest good frame's;
    None when no frame has a face."""
    pts = np.asarray(landmarks, np.float64)
    good = np.flatnonzero(np.isfinite(pts[:, FACE_OVAL + [NOSE_TIP]]).all(axis=(1, 2)))
    if not len(good):
        return None
    nearest = good[np.abs(np.arange(len(pts))[:, None] - good[None]).argmin(1)]
    pts = np.round(pts[nearest], 1)
    return pts[:, FACE_OVAL].tolist(), pts[:, NOSE_TIP].tolist()


def _hull(oval) -> np.ndarray:
    return cv2.convexHull(np.asarray(oval, np.float32))


def face_alpha(oval, size: int) -> np.ndarray:
    """(size, size) float32 in [0, 1]: 1 inside the face, feathered to exactly 0 at the hull."""
    hull = _hull(oval)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(mask, np.round(hull).astype(np.int32), 1)
    sigma = max(1.0, FEATHER * np.sqrt(max(cv2.contourArea(hull), 1.0)))
    pull = int(np.ceil(2.5 * sigma))  # erode before blurring: the blur then reaches the hull ~0
    inner = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pull + 1, 2 * pull + 1)))
    alpha = cv2.GaussianBlur(inner.astype(np.float32), (0, 0), sigma)
    return np.clip(alpha * mask, 0.0, 1.0)  # the hard mask cuts the Gaussian's tail: outside is 0


def _frame(oval) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The oval's centre, axes (down the face, across it) and semi-axis lengths."""
    m = cv2.moments(_hull(oval))
    area = max(m["m00"], 1e-6)
    centre = np.array([m["m10"], m["m01"]]) / area
    cov = np.array([[m["mu20"], m["mu11"]], [m["mu11"], m["mu02"]]]) / area
    values, vectors = np.linalg.eigh(cov)
    down = vectors[:, 1] * (1 if vectors[1, 1] >= 0 else -1)  # the major axis, pointing chinwards
    across = np.array([down[1], -down[0]])
    semi = 2 * np.sqrt(np.maximum(values[::-1], 1e-6))  # a uniform ellipse's semi-axis is 2 sigma
    return centre, np.stack([across, down]), semi


def _local(points: np.ndarray, oval) -> np.ndarray:
    centre, axes, semi = _frame(oval)
    return ((points - centre) @ axes.T) / semi


@lru_cache(maxsize=1)
def _frontal_nose() -> np.ndarray:
    """Where the nose tip sits in the oval's own coordinates when the face looks straight ahead."""
    t = unit_template().astype(np.float64) * 256
    return _local(t[NOSE_TIP][None], t[FACE_OVAL])[0]


def face_normals(oval, nose, size: int) -> np.ndarray:
    """(size, size, 3) unit surface normals in image axes (x right, y down, z to the camera)."""
    centre, axes, semi = _frame(oval)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    q = _local(np.stack([x, y], -1).reshape(-1, 2), oval)
    turn = _local(np.asarray(nose, np.float64)[None], oval)[0] - _frontal_nose()
    turn *= min(1.0, 0.5 / max(np.linalg.norm(turn), 1e-9))  # a bounded tilt, whatever the landmarks
    r2 = (q**2).sum(1, keepdims=True)
    q = q - turn * np.clip(1 - r2, 0, 1)  # the apex moves with the nose; the rim stays on the oval
    z = np.sqrt(np.clip(1 - (q**2).sum(1, keepdims=True), 0, 1))
    n = np.concatenate([q @ axes, z], 1)  # back to image axes
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-9
    return n.reshape(size, size, 3).astype(np.float32)
