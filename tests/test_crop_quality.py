"""The aligned crop a trainer sees: antialiased when shrinking, framed so an open jaw stays in,
black (and measured) where the face leaves the frame."""

import cv2
import numpy as np
import pytest
from skimage import data

from factory.faces.align import frame_to_crop, outside_share, warp_crop
from factory.faces.landmarks import INNER_LIP_GAP
from factory.faces.masks import dilate, lower_face_mask
from tests.conftest import SR
from tests.faces import astronaut_landmarks, eye_distance
from tests.media import write_video

CROP = 256


def area_reference(image, scale, x0, y0):
    """cv2.resize(INTER_AREA) of the square region a crop at `scale` covers, and the similarity
    that warps the same region (pixel centres matched: dst i <- src x0 + (i + 0.5) / s - 0.5)."""
    side = round(CROP / scale)
    ref = cv2.resize(image[y0:y0 + side, x0:x0 + side], (CROP, CROP), interpolation=cv2.INTER_AREA)
    s = CROP / side
    tf = np.array([[s, 0, -0.5 + 0.5 * s - x0 * s], [0, s, -0.5 + 0.5 * s - y0 * s]])
    return ref, tf


def white_noise():
    return np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)


def gravel():
    return np.tile(np.dstack([data.gravel()] * 3), (3, 4, 1))[:1080, :1920]


# Mean absolute error against the area resize at scale 0.3 (a 1080p face into a 256 crop).
# Measured: plain warpAffine 34.9 (noise) / 7.2 (gravel); the antialiased warp 4.6 / 1.5.
@pytest.mark.parametrize("texture, bound", [(white_noise, 8.0), (gravel, 2.5)])
def test_shrinking_warp_matches_an_area_resize(texture, bound):
    image = texture()
    ref, tf = area_reference(image, 0.3, 400, 100)
    err = np.abs(warp_crop(image, tf, CROP).astype(np.float64) - ref).mean()
    assert err < bound


def test_enlarging_warp_is_untouched_bilinear():
    image = np.ascontiguousarray(data.astronaut()[100:300, 150:350])
    tf = np.array([[1.5, 0, -20.0], [0, 1.5, -10.0]])
    expected = cv2.warpAffine(image, tf.astype(np.float32), (CROP, CROP), flags=cv2.INTER_LINEAR)
    assert np.array_equal(warp_crop(image, tf, CROP), expected)


def open_jaw(points, gap_per_eye_distance=0.7):
    """The face with its jaw dropped until the inner lips are `gap_per_eye_distance` eye
    distances apart (0.7: a mouth opened as wide as it goes, ~45 mm against ~63 mm between the
    eyes). Everything below the upper inner lip moves down with the mandible."""
    upper, lower = INNER_LIP_GAP
    drop = gap_per_eye_distance * eye_distance(points) - (points[lower, 1] - points[upper, 1])
    opened = points.copy()
    opened[points[:, 1] > points[upper, 1] + 1, 1] += drop
    return opened


@pytest.mark.parametrize("size", [256, 512])
def test_a_wide_open_jaw_stays_inside_the_crop(size):
    face = open_jaw(astronaut_landmarks())
    in_crop = face @ frame_to_crop(face, size)[:, :2].T + frame_to_crop(face, size)[:, 2]
    assert in_crop[:, 1].max() < 0.9 * size  # the chin, with room for a lowered head
    # the generator's dilated mask (10 px at 256) fits in the crop too
    mask = dilate(lower_face_mask([in_crop[None]], size), 10 * size // 256)
    assert not mask[-1].any() and not mask[:, 0].any() and not mask[:, -1].any()


# The astronaut photo (512 px) halved into the crop with its left edge at crop column 40: the
# crop's first 40 columns lie beyond the frame.
EDGE = 40
NEAR_THE_EDGE = np.array([[0.5, 0.0, EDGE], [0.0, 0.5, 0.0]])


def test_beyond_the_frame_is_black_not_mirrored():
    crop = warp_crop(data.astronaut(), NEAR_THE_EDGE, CROP)
    assert (crop[:, :EDGE - 1] == 0).all()
    assert crop[:, EDGE + 2:].mean() > 50  # the photo itself


def test_the_share_beyond_the_frame_is_measured():
    assert outside_share(NEAR_THE_EDGE, CROP, data.astronaut().shape) == pytest.approx(EDGE / CROP, abs=0.01)
    inside = np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]])
    assert outside_share(inside, CROP, data.astronaut().shape) == 0.0


def test_ingest_at_512_records_the_share_beyond_the_frame(speech, tmp_path):
    """configs/gpu.yaml crops at 512: clips come out at that size with the face where the template
    puts it, and each clip says, per frame, how much of it lies beyond the frame (a video framed
    tighter than the crop: the astronaut's face, forehead to chin, fills it)."""
    from factory.clip_store import ClipStore
    from factory.clips import load_clip
    from factory.faces.align import template
    from factory.faces.landmarks import RIGID
    from factory.records import Record
    from factory.stages.ingest import IngestConfig, IngestStage

    face = cv2.resize(np.ascontiguousarray(data.astronaut()[40:210, 140:310]), (192, 192))
    still_talker = write_video(tmp_path / "tight.mp4", np.stack([face] * 40), audio=speech[: 40 * SR // 25])
    cfg = IngestConfig(crop_size=512, clip_frames=25, clip_stride=25, max_clips_per_video=1)
    stage = IngestStage(cfg, ClipStore.for_settings(tmp_path / "clips", {"test": 512}))
    clip_record = stage([Record("v", "video", meta={"source": str(still_talker), "speaker": "s"})])[0]
    clip = load_clip(clip_record.meta["clip_path"])
    assert clip.frames.shape == (25, 512, 512, 3)
    assert np.abs(clip.landmarks[:, RIGID] - template(512)[RIGID]).mean() < 8.0
    outside = np.array(clip_record.meta["outside_frame"])
    assert outside.shape == (25,) and ((0 <= outside) & (outside <= 1)).all()
    assert outside.mean() > 0.05
    black = (clip.frames.max(-1) == 0).mean(axis=(1, 2))
    np.testing.assert_allclose(black, outside, atol=0.03)
