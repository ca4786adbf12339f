"""Tracking smoothness: the crop follows a moving head without lag, and does not breathe when
the brows move."""

import numpy as np
import pytest

from factory.faces.align import apply, frame_to_crop, template
from factory.faces.landmarks import BROWS
from factory.stages.assemble import ClipAssembler, smooth_track
from factory.stages.ingest import IngestConfig
from tests.faces import astronaut_landmarks, eye_distance

CROP = 256
SPEED = 3.0  # px per frame to the right: a head moving briskly in a 720p shot


def moving_track(frames=40):
    """Real face landmarks (the template) translated at constant velocity."""
    steps = np.arange(frames)[:, None, None] * np.array([SPEED, 0.0])
    return template(CROP)[None] * 1.0 + steps


def causal_ema(points, weight=0.5):
    """The smoothing ingest used before: an EMA with `weight` on the previous smoothed frame."""
    out, state = [], None
    for p in points:
        state = p if state is None else weight * state + (1 - weight) * p
        out.append(state)
    return np.stack(out)


def crop_error(smoothed, truth):
    """Per frame, how far (crop px) the crop built from the smoothed points misplaces the face."""
    return np.array([np.abs(apply(frame_to_crop(s, CROP), t) - template(CROP)).max()
                     for s, t in zip(smoothed, truth)])


def test_the_causal_ema_lags_a_moving_face():
    track = moving_track()
    assert crop_error(causal_ema(track), track)[5:].min() >= 1.0  # ~ one frame of motion


def test_zero_phase_smoothing_does_not_lag():
    track = moving_track()
    sigma = IngestConfig().landmark_smoothing_sigma
    assert sigma >= 1.0
    err = crop_error(smooth_track(track, sigma), track)
    assert err.max() < 1e-6  # constant velocity passes a centred filter, ends included (odd padding)


def test_zero_phase_smoothing_removes_jitter():
    track = moving_track(60)
    jitter = np.random.default_rng(0).normal(0, 1.0, (60, 1, 2))  # detector noise: the whole face shakes
    err = crop_error(smooth_track(track + jitter, IngestConfig().landmark_smoothing_sigma), track)
    raw = crop_error(track + jitter, track)
    assert err[8:-8].mean() < 0.5 * raw[8:-8].mean()


def test_assembler_crops_with_the_zero_phase_track():
    """Streaming (frames cropped as their look-ahead arrives, the rest at the track's end) gives
    the same transforms as smoothing the whole track at once."""
    track = moving_track(30)
    sigma = IngestConfig().landmark_smoothing_sigma
    clips = []
    asm = ClipAssembler(CROP, 10, 10, sigma, lambda start, arrays: clips.append((start, arrays)) or True)
    frame = np.zeros((64, 64, 3), np.uint8)
    for k, points in enumerate(track):
        asm.add(k, frame, points)
    asm.break_track()  # end of video: the held-back frames become the last clip
    assert [start for start, _ in clips] == [0, 10, 20]
    transforms = np.concatenate([arrays.transforms for _, arrays in clips])
    expected = np.stack([frame_to_crop(p, CROP) for p in smooth_track(track, sigma)])
    np.testing.assert_allclose(transforms, expected, atol=1e-3)
    assert all(arrays.outside.shape == (10,) for _, arrays in clips)


def raise_brows(points, share_of_eye_distance=0.12):
    """Brows up by ~8 mm (0.12 x ~63 mm between the eyes): surprise, emphasis while speaking."""
    raised = points.copy()
    raised[BROWS, 1] -= share_of_eye_distance * eye_distance(points)
    return raised


def test_raising_the_brows_does_not_move_the_crop():
    face = astronaut_landmarks()
    still, raised = frame_to_crop(face, CROP), frame_to_crop(raise_brows(face), CROP)
    shift = np.abs(apply(still, face) - apply(raised, face)).max()
    assert shift < 0.01  # crop px
