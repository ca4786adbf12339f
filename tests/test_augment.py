"""Augmentations: recorded, not applied. The shards keep the clean pair; the recorded parameters
replay the same transform on both sides, and relighting touches the face only, following it."""

import json

import cv2
import numpy as np
import pytest
from skimage import data

from augment import occlusion, relight
from augment.face_geometry import FACE_OVAL, face_points
from augment.replay import apply_augmentation, occluder_masks
from augment.stage import AugmentConfig, AugmentStage
from factory.faces.align import apply, frame_to_crop, warp_crop
from factory.payload import PairMedia
from factory.records import Record
from tests.faces import astronaut_landmarks

SIZE, N = 128, 6


@pytest.fixture(scope="module")
def astronaut():
    """(frames, landmarks): the astronaut's aligned crop and its real MediaPipe landmarks, N frames."""
    lm = astronaut_landmarks()
    t = frame_to_crop(lm, SIZE)
    crop = warp_crop(data.astronaut(), t, SIZE)
    return np.repeat(crop[None], N, 0), np.repeat(apply(t, lm)[None], N, 0)


def pair(key, astronaut):
    real, marks = astronaut
    syn = real.copy()
    syn[:, 85:105, 45:85] = np.random.default_rng(1).integers(0, 255, (N, 20, 40, 3))  # a different "mouth"
    return Record(key, "pair", media=PairMedia(real_frames=real.copy(), syn_frames=syn, clip_landmarks=marks), meta={})


def stage(kind=None, share=1.0, seed=3):
    return AugmentStage(AugmentConfig(share=share, occlusion=kind in (None, "occlusion"),
                                      relight=kind in (None, "relight")), seed=seed)


def outside_face(marks) -> np.ndarray:
    hull = np.zeros((SIZE, SIZE), np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.round(marks[FACE_OVAL]).astype(np.int32)), 1)
    return cv2.dilate(hull, np.ones((3, 3), np.uint8)) == 0  # a pixel of slack for rounding the hull


@pytest.mark.parametrize("kind", ["occlusion", "relight"])
def test_the_stage_keeps_the_clean_pair_and_records_the_augmentation(kind, astronaut):
    rec = pair("k1", astronaut)
    real0, syn0 = rec.media.real_frames.copy(), rec.media.syn_frames.copy()
    out = stage(kind)([rec])[0]
    assert np.array_equal(out.media.real_frames, real0) and np.array_equal(out.media.syn_frames, syn0)
    aug = out.meta["augment"]
    assert aug["kind"] == kind and (aug["frames"], aug["size"]) == (N, SIZE)
    assert json.loads(json.dumps(aug)) == json.loads(json.dumps(aug, sort_keys=True))  # plain JSON


@pytest.mark.parametrize("kind", ["occlusion", "relight"])
def test_replay_is_deterministic_and_the_same_on_both_sides(kind, astronaut):
    rec = stage(kind)([pair("k2", astronaut)])[0]
    real0, syn0 = rec.media.real_frames.copy(), rec.media.syn_frames.copy()
    stored = json.loads(json.dumps(rec.meta["augment"]))  # as a reader gets it from meta.json
    real, syn = apply_augmentation(rec.media.real_frames, rec.media.syn_frames, stored)
    again = apply_augmentation(rec.media.real_frames, rec.media.syn_frames, rec.meta["augment"])
    assert np.array_equal(real, again[0]) and np.array_equal(syn, again[1])
    assert np.array_equal(rec.media.real_frames, real0) and np.array_equal(rec.media.syn_frames, syn0)
    assert not np.array_equal(real, real0)
    same = np.ones((SIZE, SIZE), bool)
    same[85:105, 45:85] = False  # where the inputs agree, the outputs agree: the pair stays aligned
    assert np.array_equal(real[:, same], syn[:, same])
    # a rerun of the stage records the same augmentation
    assert stage(kind)([pair("k2", astronaut)])[0].meta["augment"] == rec.meta["augment"]


def test_replay_refuses_frames_that_do_not_match_the_record(astronaut):
    rec = stage("relight")([pair("k3", astronaut)])[0]
    real = rec.media.real_frames
    with pytest.raises(ValueError, match="shape"):
        apply_augmentation(real[:-1], rec.media.syn_frames[:-1], rec.meta["augment"])
    assert apply_augmentation(real, real, None)[0] is real  # not drawn: the clean pair


def test_each_kind_gets_the_configured_share(astronaut):
    """Over many keys the realised share of each kind is the configured share (binomial, 4.5 sd)."""
    n, share = 4000, 0.05
    tiny = astronaut[0][:2, :16, :16].copy(), astronaut[1][:2]
    records = [Record(f"clip{i:05d}", "pair", media=PairMedia(real_frames=tiny[0], syn_frames=tiny[0],
                                                              clip_landmarks=tiny[1]), meta={}) for i in range(n)]
    for kinds in (None, "relight", "occlusion"):
        out = stage(kinds, share=share, seed=0)(records)
        counts = {k: sum(r.meta.get("augment", {}).get("kind") == k for r in out) for k in ("occlusion", "relight")}
        for r in records:
            r.meta.pop("augment", None)
        tolerance = 4.5 * np.sqrt(n * share * (1 - share))
        for k, c in counts.items():
            expected = n * share if kinds in (None, k) else 0
            assert abs(c - expected) <= tolerance, (kinds, counts)


def relight_params(marks, kind="dynamic", light=(1.0, 0.0), gain=(1.0, 1.0, 1.0)):
    oval, nose = face_points(np.repeat(marks[None], N, 0))
    return relight.RelightParams(kind, gain, light, light, 0.5, gain, oval, nose)


def test_relight_changes_the_face_and_never_the_background(astronaut):
    frames, marks = astronaut
    outside = outside_face(marks[0])
    for seed in range(8):
        rng = np.random.default_rng(seed)
        p = relight.sample_params(rng, *face_points(marks))
        out = relight.apply(frames, p)
        assert np.array_equal(out[:, outside], frames[:, outside]), p.kind
        changed = np.abs(out.astype(int) - frames).max(-1) > 2
        assert changed[:, ~outside].mean() > 0.3, p.kind  # most of the face is relit


def shading_centre(p) -> np.ndarray:
    """Centre of mass of the gain's departure from 1 in the first frame, (x, y)."""
    g = np.abs(relight.gains(p, N, SIZE)[0, ..., 0] - 1)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    return np.array([(g * x).sum(), (g * y).sum()]) / g.sum()


def test_the_shading_moves_with_the_face(astronaut):
    marks = astronaut[1][0]
    for shift in ((12.0, 0.0), (-9.0, 7.0)):
        moved = shading_centre(relight_params(marks + shift)) - shading_centre(relight_params(marks))
        assert np.abs(moved - shift).max() < 1.0, (shift, moved)


def test_the_lit_side_follows_the_light_and_the_apex_follows_the_nose(astronaut):
    marks = astronaut[1][0]
    left, right = (relight.gains(relight_params(marks, light=d), N, SIZE)[0, ..., 0] for d in ((-1, 0), (1, 0)))
    cx = int(round(marks[FACE_OVAL, 0].mean()))
    cheek = slice(int(marks[FACE_OVAL, 1].mean()) - 5, int(marks[FACE_OVAL, 1].mean()) + 5)
    assert right[cheek, cx + 15].mean() > right[cheek, cx - 15].mean()
    assert left[cheek, cx + 15].mean() < left[cheek, cx - 15].mean()
    # a frontal light is brightest where the face points at the camera: it moves as the nose turns
    turned = marks.copy()
    turned[1] += (10.0, 0.0)
    frontal = (relight.gains(relight_params(m, light=(0, 0)), N, SIZE)[0, ..., 0] for m in (marks, turned))
    apex = [np.unravel_index(np.argmax(g), g.shape)[1] for g in frontal]
    assert apex[1] > apex[0] + 3, apex


def test_static_relight_inverts(astronaut):
    frames, marks = astronaut
    p = relight_params(marks[0], kind="static", gain=(0.9, 0.8, 0.95))
    assert np.abs(relight.invert(relight.apply(frames, p), p).astype(int) - frames).max() <= 1


def test_dynamic_light_moves_over_time(astronaut):
    marks = astronaut[1][0]
    p = relight_params(marks, light=(1.0, 0.0))
    p.light_to = (-1.0, 0.0)
    g = relight.gains(p, N, SIZE)[..., 0]
    cx, cy = int(marks[FACE_OVAL, 0].mean()), int(marks[FACE_OVAL, 1].mean())
    assert g[0, cy, cx + 15] > g[0, cy, cx - 15] and g[-1, cy, cx + 15] < g[-1, cy, cx - 15]


def test_occluder_moves_and_its_mask_replays(astronaut):
    p = occlusion.sample_params(np.random.default_rng(0))
    _, masks = occlusion.apply(astronaut[0], p)
    assert masks.max() > 200 and not np.array_equal(masks[0], masks[-1])
    recorded = {"kind": "occlusion", "frames": N, "size": SIZE, "params": json.loads(json.dumps(p.to_dict()))}
    assert np.array_equal(occluder_masks(recorded), masks)
