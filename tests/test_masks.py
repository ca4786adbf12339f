import numpy as np

from factory.faces.align import template
from factory.faces.landmarks import INNER_LIP_GAP, LIPS_OUTER, LOWER_FACE
from factory.faces.masks import composite, compositing_alpha, feathered_alpha, lower_face_mask


def talking_track(openings):
    """Template landmarks whose jaw and lower lip drop by each opening (pixels)."""
    base = template(256)
    lower = base[:, 1] > base[INNER_LIP_GAP[0], 1] + 1
    frames = []
    for o in openings:
        f = base.copy()
        f[lower, 1] += o
        frames.append(f)
    return np.stack(frames)


def inside(mask, pts):
    p = np.round(pts).astype(int)
    return mask[p[:, 1], p[:, 0]].astype(bool)


def test_mask_covers_mouth_and_jaw_of_every_frame():
    real, alt = talking_track([0, 2, 4]), talking_track([0, 9, 14])
    mask = lower_face_mask([real, alt], 256)
    for track in (real, alt):
        for frame in track:
            assert inside(mask, frame[LIPS_OUTER]).all()


def test_mask_is_static_and_clamped_at_widest_jaw():
    """The mask does not follow the lips: one mask for the clip, wide enough for its widest jaw."""
    closed, opened = talking_track([0]), talking_track([14])
    both = lower_face_mask([closed, opened], 256)
    assert (both >= lower_face_mask([closed], 256)).all()
    assert both.sum() > lower_face_mask([closed], 256).sum()
    chin_open = opened[0][152]
    assert inside(both, chin_open[None] - [0, 1]).all()
    # nothing above the nose: eyes are never masked
    assert not inside(both, template(256)[[33, 263]]).any()
    assert set(LOWER_FACE) >= {152, 2}


def test_composite_keeps_pixels_outside_dilated_mask_exactly():
    rng = np.random.default_rng(1)
    real = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    fake = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[20:40, 20:44] = 1
    alpha = feathered_alpha(mask, sigma=4, dilation=5)
    out = composite(real, fake, alpha)
    outside = np.ones((64, 64), bool)
    outside[15:45, 15:49] = False
    assert np.array_equal(out[:, outside], real[:, outside])
    assert not np.array_equal(out[:, 28:32, 30:34], real[:, 28:32, 30:34])
    assert 0.0 <= alpha.min() and alpha.max() <= 1.0
    assert alpha[30, 32] > 0.95 and 0 < alpha[20, 32] < 0.9  # soft at the edge, solid inside


def test_compositing_alpha_is_solid_on_the_face_and_off_on_the_nose():
    """The face is grown before the feather: alpha >= 0.98 up to its very edge (a feather of the
    bare mask gives 0.5 there, and the real jaw shows through), and ~0 on the kept-real nose."""
    face = np.zeros((128, 128), np.uint8)
    face[60:110, 30:98] = 1
    nose = np.zeros((1, 128, 128), np.uint8)
    nose[0, 44:52, 56:72] = 1  # 8 px above the face
    alpha = compositing_alpha(face, nose, sigma=2.0, dilation=5)[0]
    assert alpha[face.astype(bool)].min() >= 0.98 * 255
    assert alpha[nose[0].astype(bool)].max() <= 0.03 * 255
    assert alpha[:, :18].max() == 0 and alpha[122:].max() == 0  # support: grown 5 px, feathered 3 sigma more


def test_uint8_alpha_composites_in_exact_integers():
    rng = np.random.default_rng(2)
    real, fake = (rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8) for _ in range(2))
    alpha = rng.integers(0, 256, (2, 16, 16), dtype=np.uint8)
    alpha[:, :4] = 0
    alpha[:, -4:] = 255
    out = composite(real, fake, alpha)
    assert np.array_equal(out[:, :4], real[:, :4]) and np.array_equal(out[:, -4:], fake[:, -4:])
    expected = (real.astype(int) * (255 - alpha[..., None]) + fake.astype(int) * alpha[..., None] + 127) // 255
    assert np.array_equal(out, expected)
