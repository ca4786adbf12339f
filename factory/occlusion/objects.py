"""Occluders as objects: boxes found on several probe frames joined into one object each, and the
sanity bound on the size of an occluder's mask.

Why objects: SAM 2 tracks objects. A hand boxed on three probes given as three objects is three
masks whose errors add up (each false positive spreads its own mask through the whole clip); given
as one object with a box on each of its frames, SAM 2 conditions one track on all of them.

Why an area bound: a hand or a microphone covers part of the lower face. A mask larger than that
(SAM 2 segmenting the whole face, the person or the background from a loose box) would keep most
of the face real and leave nothing to dub, or, if real, hides the mouth: neither makes a pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

Box = tuple[int, int, int, int]


@dataclass
class Occluder:
    label: str
    boxes: dict[int, Box] = field(default_factory=dict)  # probe frame -> box on it


def iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def normal_label(label: str) -> str:
    return " ".join(label.lower().split()).rstrip("s")  # "Hands" and "hand" are one kind


def group_occluders(found: list[tuple[int, str, Box]], min_iou: float) -> list[Occluder]:
    """Join (frame, label, box) findings into objects, probe by probe: a box continues the object
    of the same label whose latest box overlaps it most (IoU >= `min_iou`); each object takes at
    most one box per probe; a box that continues none starts a new object."""
    objects: list[Occluder] = []
    for frame in sorted({f for f, _, _ in found}):
        here = [(label, box) for f, label, box in found if f == frame]
        candidates = sorted(
            ((iou(obj.boxes[max(obj.boxes)], box), o, b) for o, obj in enumerate(objects)
             for b, (label, box) in enumerate(here) if normal_label(obj.label) == normal_label(label)),
            reverse=True)
        taken_obj, taken_box = set(), set()
        for overlap, o, b in candidates:  # greedy, best overlap first
            if overlap >= min_iou and o not in taken_obj and b not in taken_box:
                objects[o].boxes[frame] = here[b][1]
                taken_obj.add(o)
                taken_box.add(b)
        objects += [Occluder(label, {frame: box}) for b, (label, box) in enumerate(here) if b not in taken_box]
    return objects


def face_regions(landmarks: np.ndarray, height: int, width: int) -> np.ndarray:
    """(T, H, W) bool, the convex hull of each frame's face landmarks (empty where none are finite)."""
    faces = np.zeros((len(landmarks), height, width), np.uint8)
    for t, points in enumerate(np.asarray(landmarks, np.float32)):
        points = points[np.isfinite(points).all(axis=1)]
        if len(points) >= 3:
            cv2.fillConvexPoly(faces[t], cv2.convexHull(np.round(points).astype(np.int32)), 1)
    return faces.astype(bool)


def area_shares(mask: np.ndarray, face: np.ndarray | None) -> tuple[float, float]:
    """The largest share, over frames, of the crop and of the face that one occluder mask covers."""
    mask = np.asarray(mask, bool)
    crop = float(mask.mean(axis=(1, 2)).max()) if mask.size else 0.0
    if face is None or not face.any():
        return crop, 0.0
    face_px = face.sum(axis=(1, 2))
    shares = (mask & face).sum(axis=(1, 2))[face_px > 0] / face_px[face_px > 0]
    return crop, float(shares.max())


def oversize_reason(crop_share: float, face_share: float, max_crop_share: float, max_face_share: float
                    ) -> str | None:
    if crop_share > max_crop_share:
        return f"occluder_crop_share_above_{max_crop_share:g}"
    if face_share > max_face_share:
        return f"occluder_face_share_above_{max_face_share:g}"
    return None
