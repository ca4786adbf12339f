import numpy as np

from factory.faces.align import align_to_template, apply, template, umeyama
from factory.faces.landmarks import RIGID


def similarity(scale, angle, tx, ty):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]])


def test_umeyama_recovers_a_known_similarity():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (30, 2))
    truth = similarity(1.7, 0.3, 12.0, -4.0)
    est = umeyama(src, apply(truth, src))
    np.testing.assert_allclose(est, truth, atol=1e-9)


def test_umeyama_never_reflects():
    src = np.array([[0, 0], [3, 0], [0, 1], [1, 2.0]])
    dst = src * np.array([-1, 1])  # a mirror image: best similarity is not a reflection
    est = umeyama(src, dst)
    assert np.linalg.det(est[:, :2]) > 0


def test_alignment_undoes_head_motion():
    t = template(256)
    moved = apply(similarity(0.6, -0.2, 40, 70), t)
    np.testing.assert_allclose(align_to_template(moved, 256), t, atol=1e-6)


def test_template_is_a_face_in_the_crop():
    t = template(256)
    assert t.shape == (478, 2)
    assert (t > 0).all() and (t < 256).all()
    assert len(set(RIGID)) == len(RIGID)
