"""Real-clip gates on a real face (scikit-image's astronaut, MediaPipe landmarks): blur lowers the
sharpness, a smaller source face a smaller face_px, a turned face a larger |yaw|."""

import cv2
import numpy as np
import pytest
from skimage import data

from factory.faces.align import apply, frame_to_crop, warp_crop
from factory.faces.landmarks import FaceLandmarker
from factory.payload import PairMedia
from factory.records import Record
from filters.real_clip import RealClipConfig, RealClipFilter, head_pose

S, T = 256, 3


def real_clip_record(rgb: np.ndarray, key: str = "p", landmarks=None) -> Record:
    """A pair whose real side is T copies of the photo's aligned face, as ingest would store it."""
    with FaceLandmarker(static=True) as lm:
        face = lm.detect(rgb)[0][:, :2]
    transform = frame_to_crop(face, S)
    crop = warp_crop(rgb, transform, S)
    crop_landmarks = apply(transform, face) if landmarks is None else landmarks
    media = PairMedia(real_frames=np.repeat(crop[None], T, 0),
                      clip_landmarks=np.repeat(crop_landmarks[None], T, 0).astype(np.float32),
                      transforms=np.repeat(transform[None], T, 0).astype(np.float32))
    return Record(key, "pair", media=media)


def scores(record: Record, **cfg) -> dict:
    (out,) = RealClipFilter(RealClipConfig(**cfg), soft=True)([record])
    return out.meta["scores"]


@pytest.fixture(scope="module")
def astronaut():
    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="module")
def sharp(astronaut):
    record = real_clip_record(astronaut)
    return record, scores(record)


def test_the_real_astronaut_passes_every_gate_at_the_defaults(sharp):
    record, s = sharp
    (out,) = RealClipFilter(RealClipConfig())([record])
    assert not out.rejected, s
    assert s["abs_yaw"] < 10 and s["abs_pitch"] < 15  # a near-frontal portrait


def test_a_blurred_face_scores_lower_sharpness(astronaut, sharp):
    blurred = cv2.GaussianBlur(astronaut, (0, 0), 3)
    s = scores(real_clip_record(blurred))
    assert s["sharpness"] < sharp[1]["sharpness"] / 3
    (out,) = RealClipFilter(RealClipConfig(min_sharpness=sharp[1]["sharpness"] / 2))([real_clip_record(blurred)])
    assert out.rejected.startswith("sharpness_below_")


def test_a_smaller_source_face_scores_a_smaller_face_px(astronaut, sharp):
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)  # the same photo at half size
    s = scores(real_clip_record(small))
    assert s["face_px"] == pytest.approx(sharp[1]["face_px"] / 2, rel=0.1)


def test_a_turned_face_has_a_larger_yaw(sharp):
    record, s = sharp
    lms = record.media.clip_landmarks.copy()
    nose_x = lms[:, 1, 0:1]
    right = lms[..., 0] > nose_x
    lms[..., 0] = np.where(right, nose_x + 0.5 * (lms[..., 0] - nose_x), lms[..., 0])  # the far half foreshortened
    yaw, pitch = head_pose(lms)
    assert np.all(np.abs(yaw) > abs(s["yaw"]) + 10)
    assert np.allclose(pitch, head_pose(record.media.clip_landmarks)[1], atol=3)  # pitch barely moves


def test_a_disabled_gate_is_not_thresholded():
    assert set(RealClipFilter(RealClipConfig(min_face_px=None, max_abs_pitch=None)).thresholds) == {
        "sharpness", "abs_yaw"}
