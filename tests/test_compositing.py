"""Compositing and the transplant on a real face with wide jaw motion: the demo's mouth rig opens
the astronaut's jaw up to its widest, the crops are aligned, and MediaPipe tracks every frame."""

from __future__ import annotations

import numpy as np
import pytest

from factory.clips import Clip, occlusion_path, save_clip, save_occlusion
from factory.faces.align import frame_to_crop, warp_crop
from factory.faces.landmarks import FaceLandmarker
from factory.faces.masks import JAW_LINE, NOSE_TIP_AND_ALAE, UNDER_NOSE, composite
from factory.faces.registration import NOSE_BASE, move_points, register
from factory.generators.transplant import TransplantGenerator, TransplantSettings
from factory.records import Record
from factory.stages.generate import GenerateConfig, GenerateStage

S = 256
REAL_OPEN = [0.0, 0.5, 1.0, 0.2, 0.8, 0.1]  # of the demo's widest jaw drop
ALT_OPEN = [1.0, 0.0, 0.3, 0.9, 0.0, 0.6]
# The alternative clip sits a little off the real one, as two clips of real footage do: a known
# rigid jitter per frame (dx, dy in pixels, degrees), which the registration must undo.
JITTER = [(2.5, -1.5, 0.8), (-2.0, 1.0, -0.5), (1.0, 2.5, 0.0), (-3.0, -2.0, 1.0), (0.5, -2.5, -1.0), (2.0, 2.0, 0.5)]


def jitter(dx, dy, degrees):
    import cv2

    m = cv2.getRotationMatrix2D((S / 2, S / 2), degrees, 1.0)
    m[:, 2] += (dx, dy)
    return m


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from factory.demo import MAX_OPEN, astronaut_rig

    rig = astronaut_rig()
    to_crop = frame_to_crop(rig.pts, S)  # one alignment for both: the jitter below is the only offset
    frames = {}
    with FaceLandmarker(static=True) as lm:
        for name, openings, moves in (("real", REAL_OPEN, None), ("alt", ALT_OPEN, JITTER)):
            crops = []
            for i, o in enumerate(openings):
                m = to_crop if moves is None else np.vstack([jitter(*moves[i]), [0, 0, 1]])[:2] @ np.vstack([to_crop, [0, 0, 1]])
                crops.append(warp_crop(rig.render(o * MAX_OPEN * rig.face_height), m, S))
            crops = np.stack(crops)
            landmarks = np.stack([lm.detect(c)[0][:, :2] for c in crops]).astype(np.float32)
            frames[name] = (crops, landmarks)
    folder = tmp_path_factory.mktemp("jaw")
    n = len(REAL_OPEN)
    for name, (crops, landmarks) in frames.items():
        save_clip(folder / f"{name}.npz", Clip(crops, landmarks, np.repeat(np.eye(2, 3, dtype=np.float32)[None], n, 0),
                                               np.zeros(n * 640, np.int16)))
    return folder


def generate(clips, **meta):
    meta = {"clip_path": str(clips / "real.npz"), "alt_clip_path": str(clips / "alt.npz"), **meta}
    (record,) = GenerateStage(GenerateConfig())([Record("real", "pair", meta=meta)])
    return record


def alpha_at(alpha, points):
    p = np.round(points).astype(int)
    return alpha[p[:, 1], p[:, 0]] / 255


def test_alpha_covers_both_lower_faces_and_spares_the_nose(clips):
    record = generate(clips)
    media = record.media
    from factory.clips import load_clip

    real, alt = load_clip(clips / "real.npz"), load_clip(clips / "alt.npz")
    alt_on_real = move_points(alt.landmarks, register(alt.frames, real.frames, real.landmarks))
    for t, alpha in enumerate(media.alpha):
        for lms in (real.landmarks[t], alt_on_real[t]):  # the jaw line, chin at its widest included, and the lips
            assert alpha_at(alpha, lms[JAW_LINE + UNDER_NOSE]).min() >= 0.98, t
        assert alpha_at(alpha, real.landmarks[t][NOSE_TIP_AND_ALAE]).max() <= 0.05, t
    edited = (media.alpha > 0).any(axis=0).mean()
    assert edited < 0.2  # the lower face and a thin margin, not the neck and background (0.14 here)


def test_stored_mask_is_the_support_and_alpha_recomposites_exactly(clips):
    stage = GenerateStage(GenerateConfig())
    stage.setup()
    record = Record("real", "pair", meta={"clip_path": str(clips / "real.npz"), "alt_clip_path": str(clips / "alt.npz")})
    inp, media, alpha = stage.prepare(record)
    rendered = stage.generator.generate(inp)
    media = stage.finish(record, inp, media, alpha, rendered).media
    assert np.array_equal(media.mask, (media.alpha > 0).any(axis=0))  # mask.png is alpha's support
    outside = ~media.mask.astype(bool)
    assert np.array_equal(media.syn_frames[:, outside], media.real_frames[:, outside])
    assert media.alpha.dtype == np.uint8 and media.alpha.shape == media.real_frames.shape[:3]
    # V_real, the render and the stored alpha give V_syn bit for bit
    assert np.array_equal(composite(media.real_frames, rendered, media.alpha), media.syn_frames)


def test_registration_undoes_the_alternative_clips_offset(clips):
    from factory.clips import load_clip

    real, alt = load_clip(clips / "real.npz"), load_clip(clips / "alt.npz")
    moves = register(alt.frames, real.frames, real.landmarks)
    truth = [jitter(*j) for j in JITTER]  # real crop -> alt crop
    base = real.landmarks[:, NOSE_BASE]
    before = np.linalg.norm(move_points(base, np.stack(truth)) - base, axis=-1)
    after = np.linalg.norm(move_points(move_points(base, np.stack(truth)), moves) - base, axis=-1)
    assert before.max() > 2.0
    assert after.max() < 0.75, after.round(2)


def test_transplant_pastes_a_registered_mouth(clips):
    """With the same face on both sides, the pasted frame's nose base matches the real one."""
    record = generate(clips)
    from factory.clips import load_clip

    real, alt = load_clip(clips / "real.npz"), load_clip(clips / "alt.npz")
    n = len(real.frames)
    from factory.generators import GenerationInput

    inp = GenerationInput(key="k", real_frames=real.frames, real_landmarks=real.landmarks, real_audio=real.audio,
                          alt_frames=alt.frames, alt_landmarks=alt.landmarks, alt_audio=alt.audio,
                          masks=np.broadcast_to(record.media.mask, (n, S, S)))
    pasted = TransplantGenerator(TransplantSettings(colour_match=False)).generate(inp)
    for t in range(n):
        x, y = np.round(real.landmarks[t, 2]).astype(int)
        window = np.s_[y - 12:y + 4, x - 22:x + 22]  # the nose base and the skin just under it
        diff = np.abs(pasted[t][window].astype(int) - real.frames[t][window]).mean()
        assert diff < 4, (t, diff)  # unregistered: 8-20 levels


def test_occluders_in_the_alternative_clip_are_not_pasted(clips, tmp_path):
    import shutil

    from factory.clips import load_clip

    for name in ("real", "alt"):
        shutil.copy(clips / f"{name}.npz", tmp_path / f"{name}.npz")
    alt = load_clip(tmp_path / "alt.npz")
    hand = np.zeros(alt.frames.shape[:3], bool)
    hand[:, 150:200, 100:150] = True  # over the alternative clip's mouth, every frame
    alt.frames[hand] = (40, 220, 60)  # a green glove
    save_clip(tmp_path / "alt.npz", alt)
    save_occlusion(occlusion_path(tmp_path / "alt.npz", "t"), hand)
    real_masks = occlusion_path(tmp_path / "real.npz", "t")
    save_occlusion(real_masks, np.zeros_like(hand))  # the real clip was looked at too: nothing in front
    media = generate(tmp_path, occlusion_masks=str(real_masks)).media
    syn = media.syn_frames.astype(int)
    green = (syn[..., 1] > 150) & (syn[..., 0] < 100) & (syn[..., 2] < 120)
    assert not green.any()
    assert np.abs(syn[:, 160:190, 110:140] - media.real_frames[:, 160:190, 110:140]).mean() < 3  # real kept there
