import numpy as np

from factory.faces.align import apply, template
from factory.faces.landmarks import MOUTH
from factory.metrics.lmd import mouth_distance


def test_lmd_is_zero_for_identical_tracks_under_head_motion():
    t = template(256)
    a = np.stack([t, t])
    moved = np.stack([apply(np.array([[0.5, 0, 10], [0, 0.5, 3]]), t), t])
    assert mouth_distance(a, moved) < 1e-6


def test_lmd_unit_is_pixels_of_a_256_canonical_face():
    """Moving every lip point by 3 px in a 512 crop is 1.5 px of a 256-px face."""
    t512 = template(512)
    shifted = t512.copy()
    shifted[MOUTH, 1] += 3.0
    lmd = mouth_distance(t512[None], shifted[None])
    assert abs(lmd - 1.5) < 1e-6


def test_frames_without_a_face_are_skipped():
    t = template(256)
    shifted = t.copy()
    shifted[MOUTH, 0] += 2.0
    missing = np.full_like(t, np.nan)
    assert abs(mouth_distance(np.stack([t, t]), np.stack([shifted, missing])) - 2.0) < 1e-6
    assert np.isnan(mouth_distance(t[None], missing[None]))
