"""Occluders as objects across probes (label + overlap), and the mask-area sanity bound."""

from __future__ import annotations

import numpy as np

from factory.occlusion.objects import Occluder, area_shares, face_regions, group_occluders, iou, oversize_reason

HAND = (40, 60, 80, 100)


def test_iou_on_hand_computed_boxes():
    assert iou(HAND, HAND) == 1.0 and iou(HAND, (80, 60, 120, 100)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == 50 / 150


def test_one_hand_on_every_probe_is_one_object():
    moving = [(0, "hand", HAND), (25, "Hand", (44, 62, 84, 102)), (50, "hands", (50, 64, 90, 104))]
    assert group_occluders(moving, 0.3) == [Occluder("hand", {0: HAND, 25: (44, 62, 84, 102), 50: (50, 64, 90, 104)})]


def test_other_labels_far_boxes_and_two_boxes_on_one_probe_stay_apart():
    found = [(0, "hand", HAND), (0, "microphone", (90, 120, 110, 200)),
             (25, "hand", HAND), (25, "hand", (42, 60, 82, 100)),  # a second hand overlapping the first
             (25, "microphone", (0, 0, 20, 20))]  # a microphone far from the first one: another object
    objects = group_occluders(found, 0.3)
    assert [(o.label, sorted(o.boxes)) for o in objects] == [
        ("hand", [0, 25]), ("microphone", [0]), ("hand", [25]), ("microphone", [25])]
    assert objects[0].boxes[25] == HAND  # the best overlap continues the object


def test_a_box_continues_the_objects_latest_box():
    drifting = [(0, "cup", (0, 0, 40, 40)), (25, "cup", (20, 0, 60, 40)), (50, "cup", (40, 0, 80, 40))]
    assert len(group_occluders(drifting, 0.3)) == 1  # 0 -> 50 overlap nothing, but each step overlaps
    assert group_occluders([], 0.3) == []


def test_area_shares_and_the_bound():
    face = np.zeros((2, 10, 10), bool)
    face[:, 2:8, 2:8] = True  # 36 px
    mask = np.zeros((2, 10, 10), bool)
    mask[1, 5:10, 2:8] = True  # 30 px of the crop, 18 of the face on frame 1
    crop, of_face = area_shares(mask, face)
    assert crop == 0.3 and of_face == 0.5
    assert oversize_reason(crop, of_face, 0.4, 0.8) is None
    assert oversize_reason(crop, of_face, 0.25, 0.8) == "occluder_crop_share_above_0.25"
    assert oversize_reason(crop, of_face, 0.4, 0.45) == "occluder_face_share_above_0.45"
    assert area_shares(mask, None) == (0.3, 0.0)


def test_face_regions_fill_the_landmark_hull_and_skip_lost_frames():
    square = np.array([[2, 2], [7, 2], [7, 7], [2, 7], [4, 4]], np.float32)
    faces = face_regions(np.stack([square, np.full_like(square, np.nan)]), 10, 10)
    assert faces.shape == (2, 10, 10) and faces[0].sum() == 36 and not faces[1].any()
