"""Real face landmarks for tests: MediaPipe's 478 points on scikit-image's astronaut photo."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from skimage import data

LEFT_EYE = [33, 133, 160, 159, 158, 144, 145, 153]
RIGHT_EYE = [362, 263, 387, 386, 385, 373, 374, 380]


@lru_cache(maxsize=1)
def astronaut_landmarks() -> np.ndarray:
    """(478, 2) float64 frame pixels of the astronaut's face (512x512 photo)."""
    from factory.faces.landmarks import FaceLandmarker

    with FaceLandmarker(static=True) as lm:
        faces = lm.detect(data.astronaut())
    assert len(faces) == 1
    return faces[0][:, :2].astype(np.float64)


def eye_distance(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[LEFT_EYE].mean(0) - points[RIGHT_EYE].mean(0)))
