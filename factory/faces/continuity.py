"""Is it still the same face? Checks that end a clip when the tracked face changes.

A shot/reverse-shot dialogue can cut between two people framed alike; if the cut is missed, the
tracker simply follows the new face. Two cheap checks catch that:
- a landmark jump: between consecutive frames (25 fps) a real head moves a fraction of its eye
  distance, while a cut to another face moves or rescales the face at once;
- an identity change inside a clip: face embeddings of a few of the clip's frames must agree
  (the same person's frames score ~0.95+ with dlib, two people at most ~0.89: README, "Identity
  threshold").
"""

from __future__ import annotations

import numpy as np

from factory.faces.landmarks import LEFT_EYE_OUTER, RIGHT_EYE_OUTER


def eye_span(points: np.ndarray) -> tuple[np.ndarray, float]:
    """(midpoint of the outer eye corners, their distance): the face's position and size."""
    left, right = points[LEFT_EYE_OUTER, :2], points[RIGHT_EYE_OUTER, :2]
    return (left + right) / 2, float(np.linalg.norm(left - right))


def landmark_jump(prev: np.ndarray, cur: np.ndarray, max_shift: float, max_scale: float) -> bool:
    """True when the face moved more than `max_shift` eye distances, or changed size by more than
    a factor `max_scale`, from one frame to the next."""
    (c0, s0), (c1, s1) = eye_span(prev), eye_span(cur)
    if min(s0, s1) <= 1e-6:
        return True
    return float(np.linalg.norm(c1 - c0)) / s0 > max_shift or max(s1 / s0, s0 / s1) > max_scale


def identity_consistency(embeddings: np.ndarray) -> float:
    """The lowest cosine between any two of a clip's unit face embeddings (1.0 for one frame)."""
    sims = embeddings @ embeddings.T
    return float(sims.min()) if len(embeddings) > 1 else 1.0


def mean_identity(embeddings: np.ndarray) -> list[float]:
    """One unit embedding for the clip, rounded for JSON."""
    mean = embeddings.mean(0)
    return np.round(mean / max(np.linalg.norm(mean), 1e-8), 5).tolist()
