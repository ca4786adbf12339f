"""Occluder masks: the composition keeps occluders real (exact), and SAM 2 tracking runs from memory
(random weights: only the code path, shapes and dtypes are checked, never mask content)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from factory.faces.masks import composite, dilate, feathered_alpha
from factory.occlusion.compose import apply_occlusion, editable_mask, inpaint_mask

S, T = 64, 3
SIGMA, DILATION = 2.0, 6


def face_ellipse() -> np.ndarray:
    mask = np.zeros((S, S), np.uint8)
    cv2.ellipse(mask, (32, 44), (18, 12), 0, 0, 360, 1, -1)  # lower half of the crop
    return mask


def hand_over_mouth() -> np.ndarray:
    """A rectangle over the face's right side on frames 1 and 2; frame 0 is unoccluded."""
    occ = np.zeros((T, S, S), bool)
    occ[1:, 36:60, 30:56] = True
    return occ


def test_set_algebra_on_a_hand_computed_example():
    face = np.array([[1, 1], [0, 0]], np.uint8)
    occ = np.array([[[False, True], [True, False]]])
    assert editable_mask(face, occ).tolist() == [[[True, False], [False, False]]]
    assert inpaint_mask(face, occ).tolist() == [[[False, True], [True, True]]]
    alpha = np.array([[0.5, 1.0], [0.25, 0.0]], np.float32)
    assert apply_occlusion(alpha, occ).tolist() == [[[0.5, 0.0], [0.0, 0.0]]]


def test_inpaint_mask_is_the_complement_of_editable():
    face, occ = face_ellipse(), hand_over_mouth()
    for face_mask in (face, np.broadcast_to(face, (T, S, S))):  # static or per-frame face mask
        editable = editable_mask(face_mask, occ)
        assert editable.shape == (T, S, S) and editable.dtype == bool
        assert np.array_equal(inpaint_mask(face_mask, occ), ~editable)
    assert not (editable & occ).any()
    assert np.array_equal(editable[0], face.astype(bool))  # no occluder on frame 0


def test_composite_keeps_occluders_and_background_real_exactly():
    face, occ = face_ellipse(), hand_over_mouth()
    rng = np.random.default_rng(0)
    real = rng.integers(0, 100, (T, S, S, 3), dtype=np.uint8)
    rendered = np.full((T, S, S, 3), 220, np.uint8)  # differs from real by > 120 everywhere

    alpha = apply_occlusion(feathered_alpha(face, SIGMA, DILATION), occ)
    assert alpha.shape == (T, S, S) and alpha.dtype == np.float32
    out = composite(real, rendered, alpha)

    assert np.array_equal(out[occ], real[occ])  # the hand is the real hand, bit for bit
    outside = np.broadcast_to(~dilate(face, DILATION).astype(bool), (T, S, S))
    assert np.array_equal(out[outside], real[outside])
    # inside face and not occluder, away from the feathered face border: re-rendered
    core = cv2.erode(face, np.ones((2 * int(3 * SIGMA) + 1,) * 2, np.uint8))
    rerendered = editable_mask(core, occ)
    assert rerendered[1:].any() and (rerendered[0] & occ[1]).any()  # frame 0 edits under the later hand
    assert (np.abs(out.astype(int) - real.astype(int)).max(axis=-1)[rerendered] > 0).all()


# SAM 2 with random weights: ~0.2 s/frame at 256 px on an idle 2-core CPU

IMAGE_SIZE = 256


@pytest.fixture(scope="module")
def tracker():
    torch = pytest.importorskip("torch")
    pytest.importorskip("sam2")
    from factory.occlusion.sam2_video import OcclusionTracker

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return OcclusionTracker(image_size=IMAGE_SIZE, device="cpu", allow_random_weights=True)


@pytest.fixture
def clip() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 255, (4, S, S, 3), dtype=np.uint8)


def test_track_propagates_forward_and_backward_from_a_middle_frame(tracker, clip, monkeypatch):
    visited: list[tuple[bool, int]] = []
    propagate = tracker.predictor.propagate_in_video

    def spy(state, start_frame_idx, reverse=False, **kw):
        for frame_idx, obj_ids, logits in propagate(state, start_frame_idx=start_frame_idx, reverse=reverse, **kw):
            assert list(obj_ids) == [0, 1]  # one object per box
            visited.append((reverse, frame_idx))
            yield frame_idx, obj_ids, logits

    monkeypatch.setattr(tracker.predictor, "propagate_in_video", spy)
    masks = tracker.track(clip, [(10, 30, 40, 60), (30, 5, 70, 20)], frame_index=2)

    assert masks.shape == (4, S, S) and masks.dtype == bool
    assert [i for r, i in visited if not r] == [2, 3]
    assert [i for r, i in visited if r] == [2, 1, 0]


def test_prompts_on_several_frames_condition_both_passes(tracker, clip, monkeypatch):
    visited: list[tuple[bool, int]] = []
    propagate = tracker.predictor.propagate_in_video

    def spy(state, start_frame_idx, reverse=False, **kw):
        for frame_idx, obj_ids, logits in propagate(state, start_frame_idx=start_frame_idx, reverse=reverse, **kw):
            assert list(obj_ids) == [0, 1, 2]  # one object per box, whatever its frame
            visited.append((reverse, frame_idx))
            yield frame_idx, obj_ids, logits

    monkeypatch.setattr(tracker.predictor, "propagate_in_video", spy)
    masks = tracker.track_prompts(clip, {3: [(10, 30, 40, 60)], 1: [(30, 5, 70, 20), (0, 0, 8, 8)]})
    assert masks.shape == (4, S, S) and masks.dtype == bool  # bf16 memories on CPU: no dtype clash
    assert [i for r, i in visited if not r] == [1, 2, 3]  # forward from the first prompted frame
    assert [i for r, i in visited if r] == [3, 2, 1, 0]  # backward from the last


def test_no_boxes_means_no_occluder_and_no_model_run(tracker, clip, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the model ran for a clip without occluders")

    monkeypatch.setattr(tracker.predictor, "init_state", fail)
    for boxes in ([], [(80, 80, 120, 120)], [(5, 5, 5, 30)]):  # none, off the frame, zero width
        masks = tracker.track(clip, boxes, frame_index=1)
        assert masks.shape == (4, S, S) and masks.dtype == bool and not masks.any()


def test_frames_from_memory_match_sam2s_own_loader(tmp_path, clip):
    """Same tensor as sam2's JPEG-folder loader (frames stored losslessly as PNG bytes in .jpg files)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("sam2")
    from sam2.utils.misc import load_video_frames

    from factory.occlusion.sam2_video import _normalised_images

    for i, frame in enumerate(clip):
        (tmp_path / f"{i}.jpg").write_bytes(cv2.imencode(".png", frame[..., ::-1])[1].tobytes())
    theirs, height, width = load_video_frames(str(tmp_path), image_size=S, offload_video_to_cpu=True,
                                              compute_device=torch.device("cpu"))
    ours = _normalised_images(clip, S, torch.device("cpu"))
    assert (height, width) == (S, S)
    assert torch.allclose(ours, theirs.float(), atol=1e-5)


def test_missing_checkpoint_names_the_config_key(tmp_path):
    pytest.importorskip("sam2")
    from factory.occlusion.sam2_video import OcclusionTracker

    for checkpoint in (None, str(tmp_path / "sam2.1_hiera_tiny.pt")):
        with pytest.raises(FileNotFoundError, match=r"occlusion\.sam2_checkpoint"):
            OcclusionTracker(checkpoint=checkpoint)


def test_image_size_must_be_a_multiple_of_32():
    pytest.importorskip("sam2")
    from factory.occlusion.sam2_video import OcclusionTracker

    with pytest.raises(ValueError, match="multiple of 32"):
        OcclusionTracker(image_size=240, allow_random_weights=True)
