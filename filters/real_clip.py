"""Real-clip gates: is the real side worth training on? Face size in the source, sharpness, pose.

A trainer learns V_real as the target, so a small (upsampled), blurred or turned real face
teaches blur and profile views. These scores read only the real clip (its aligned frames,
ingest's landmarks in the crop and the source->crop transforms), so this filter is cheap and runs
first. Every score is recorded; `factory refilter` can re-threshold them. Units:

- `face_px`: face height (MediaPipe forehead point 10 to chin 152 on the canonical template) in
  *source* pixels: the template height in the crop divided by the source->crop scale. Median
  over frames. Below `min_face_px` the crop is an upsampling of too few real pixels.
- `sharpness`: variance of the Laplacian of the grey face region (the template's landmark box),
  resized to 128x128 first so crops of any size compare; median over up to 8 frames.
- `abs_yaw` / `abs_pitch`: degrees, median over frames of a 2D proxy from the landmarks (no 3D
  fit): the nose tip's offset from the eye/mouth frame relative to the frontal template, turned
  into an angle with a generic face's depth ratios (see `head_pose`). Good to a few degrees near
  frontal, coarser past 45. The signed `yaw` / `pitch` are recorded too.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from factory.faces.align import unit_template
from factory.metrics.frames import evenly_spaced
from factory.records import Record
from factory.stage import Filter, FilterConfig, FilterSpec

FOREHEAD, CHIN, NOSE_TIP = 10, 152, 1
EYE_OUTER = (33, 263)
MOUTH_CORNERS = (61, 291)
# generic face: the nose tip sits ahead of the outer eye corners by about half their distance
# (yaw), and ahead of the eye-mouth plane by about half the eye-to-mouth height (pitch)
NOSE_DEPTH_OVER_HALF_EYE_WIDTH = 1.0
NOSE_DEPTH_OVER_EYE_TO_MOUTH = 0.5
SHARPNESS_SIDE = 128


@dataclass
class RealClipConfig(FilterConfig):
    min_face_px: float | None = 64.0  # face height in source px; a 256 crop of a smaller face is a 4x upsampling
    min_sharpness: float | None = 20.0  # Laplacian variance on a 128-px grey face; blurred faces fall below
    max_abs_yaw: float | None = 35.0  # degrees; beyond, one cheek and the mouth corner hide
    max_abs_pitch: float | None = 25.0  # degrees


def real_clip_thresholds(cfg: RealClipConfig) -> dict[str, tuple[str, float]]:
    rules = {"face_px": (">=", cfg.min_face_px), "sharpness": (">=", cfg.min_sharpness),
             "abs_yaw": ("<=", cfg.max_abs_yaw), "abs_pitch": ("<=", cfg.max_abs_pitch)}
    return {name: rule for name, rule in rules.items() if rule[1] is not None}  # null: that gate is off


def face_px(transforms: np.ndarray, crop_size: int) -> float:
    """Median face height in source pixels: the crop's template height over the source->crop scale."""
    scale = np.sqrt(np.abs(np.linalg.det(transforms[:, :, :2])))
    t = unit_template() * crop_size
    return float(np.median(np.linalg.norm(t[CHIN] - t[FOREHEAD]) / scale))


def sharpness(frames: np.ndarray, k: int = 8) -> float:
    """Median Laplacian variance of the face region, at a fixed size so crop sizes compare."""
    size = frames.shape[1]
    (x0, y0), (x1, y1) = (np.clip(np.r_[unit_template().min(0), unit_template().max(0)] * size, 0, size)
                          .reshape(2, 2).astype(int))
    values = []
    for i in evenly_spaced(len(frames), k):
        grey = cv2.cvtColor(frames[i][y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)
        face = cv2.resize(grey, (SHARPNESS_SIDE, SHARPNESS_SIDE), interpolation=cv2.INTER_AREA)
        values.append(cv2.Laplacian(face.astype(np.float32), cv2.CV_32F).var())
    return float(np.median(values))


def _nose_offsets(lms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(horizontal, vertical) nose-tip offsets in the face's own frame (roll removed): horizontal in
    half eye widths from the eyes' midpoint, vertical as a share of the eye-to-mouth height."""
    left, right = lms[..., EYE_OUTER[0], :], lms[..., EYE_OUTER[1], :]
    eyes = (left + right) / 2
    mouth = (lms[..., MOUTH_CORNERS[0], :] + lms[..., MOUTH_CORNERS[1], :]) / 2
    across = right - left
    half_width = np.linalg.norm(across, axis=-1) / 2
    ux = across / (2 * half_width[..., None])
    uy = np.stack([-ux[..., 1], ux[..., 0]], -1)  # image y points down: perpendicular, towards the mouth
    nose = lms[..., NOSE_TIP, :] - eyes
    height = np.sum((mouth - eyes) * uy, -1)
    return np.sum(nose * ux, -1) / half_width, np.sum(nose * uy, -1) / height


def head_pose(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame (yaw, pitch) in degrees from (T, 478, 2) landmarks, 0 for the frontal template.

    Yaw: a nose tip of depth D ahead of eye corners W/2 apart moves by D sin(yaw) while their
    midpoint moves ~0 and their half width shrinks by cos(yaw): offset/(W/2) = (D/(W/2)) tan(yaw).
    Pitch likewise against the eye-to-mouth height H: the change of the nose's share of H is
    (D/H) tan(pitch). Positive yaw: nose towards image right; positive pitch: looking down.
    """
    x, y = _nose_offsets(np.asarray(landmarks, np.float64))
    x0, y0 = _nose_offsets(unit_template().astype(np.float64))
    yaw = np.degrees(np.arctan((x - x0) / NOSE_DEPTH_OVER_HALF_EYE_WIDTH))
    pitch = np.degrees(np.arctan((y - y0) / NOSE_DEPTH_OVER_EYE_TO_MOUTH))
    return yaw, pitch


class RealClipFilter(Filter):
    name = "real_clip"
    requires = ("real_frames", "clip_landmarks", "transforms")

    def __init__(self, cfg: RealClipConfig, soft: bool = False):
        super().__init__(real_clip_thresholds(cfg), cfg.resources, soft)

    def score(self, record: Record) -> dict[str, float]:
        media = record.media
        yaw, pitch = head_pose(media.clip_landmarks)
        return {"face_px": round(face_px(media.transforms, media.real_frames.shape[1]), 2),
                "sharpness": round(sharpness(media.real_frames), 2),
                "yaw": round(float(np.median(yaw)), 2), "pitch": round(float(np.median(pitch)), 2),
                "abs_yaw": round(float(np.median(np.abs(yaw))), 2),
                "abs_pitch": round(float(np.median(np.abs(pitch))), 2)}


SPEC = FilterSpec("real_clip", RealClipConfig, RealClipFilter, real_clip_thresholds)
