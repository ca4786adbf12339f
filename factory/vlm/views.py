"""What the quality VLM sees of a pair: short runs of consecutive frames, cropped to the mouth.

Why runs of consecutive frames: flicker, texture popping and a one-frame glitch exist only between
adjacent frames; frames 10 apart (8 sampled over a 77-frame clip) show none of them. Why several
runs spread over the clip, each its own video: they cover the clip's start, middle and end, and a
jump from one run to the next is never shown as a cut inside one video (which a model would rightly
read as instability). Even run lengths: Qwen2.5-VL merges 2 consecutive frames per temporal patch.

Why a mouth crop, enlarged: the artefacts that matter (blur of teeth, a seam at the edge of the
re-rendered region, lips that jump) are a few pixels wide on the 256-512 px face crop; shrunk to
<= 224 px as a whole they vanish. The crop is the re-rendered region (the pair's `mask`) with a
margin, so its seam and the untouched skin around it are in view; it is scaled up to `max_pixels`,
so each 14-px vision patch covers a few source pixels. Everything outside the face is the real
clip's pixels by construction (the generator composites back), so little is lost by cropping.
"""

from __future__ import annotations

import cv2
import numpy as np

# Where the mouth lies in the canonical aligned crop (fractions of its side): used when a pair
# carries no mask. From the alignment template: the mouth is centred near (0.51, 0.72).
CANONICAL_LOWER_FACE = (0.22, 0.50, 0.80, 0.95)  # x1, y1, x2, y2


def run_starts(num_frames: int, runs: int, length: int) -> list[int]:
    """First frames of `runs` runs of `length` consecutive frames, spread evenly over the clip
    (first run at the start, last at the end); fewer runs when the clip is too short for them."""
    length = min(length, num_frames)
    last = num_frames - length
    runs = max(1, min(runs, last // length + 1 if length else 1))
    if runs == 1:
        return [last // 2]
    return np.linspace(0, last, runs).round().astype(int).tolist()


def mouth_box(size: int, mask: np.ndarray | None, margin: float) -> tuple[int, int, int, int]:
    """A square (x1, y1, x2, y2) around the re-rendered region (or the canonical lower face), with
    `margin` (a share of the crop side) on every side, inside the crop."""
    if mask is not None and np.asarray(mask).any():
        ys, xs = np.nonzero(np.asarray(mask))
        x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    else:
        x1, y1, x2, y2 = (round(v * size) for v in CANONICAL_LOWER_FACE)
    pad = margin * size
    side = min(size, round(max(x2 - x1, y2 - y1) + 2 * pad))
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left = int(np.clip(round(cx - side / 2), 0, size - side))
    top = int(np.clip(round(cy - side / 2), 0, size - side))
    return left, top, left + side, top + side


def quality_views(frames: np.ndarray, mask: np.ndarray | None, runs: int, length: int, margin: float,
                  max_pixels: int) -> list[np.ndarray]:
    """`runs` clips of (length, P, P, 3) uint8: consecutive frames, mouth-cropped, scaled so P*P is
    about `max_pixels` (P a multiple of 28, the VLM's patch grid, so it is not resized again)."""
    frames = np.asarray(frames)
    x1, y1, x2, y2 = mouth_box(frames.shape[1], mask, margin)
    side = max(28, int(np.sqrt(max_pixels)) // 28 * 28)
    length = min(length, len(frames))
    views = []
    for start in run_starts(len(frames), runs, length):
        crops = frames[start:start + length, y1:y2, x1:x2]
        interpolation = cv2.INTER_CUBIC if side > crops.shape[1] else cv2.INTER_AREA
        views.append(np.stack([cv2.resize(np.ascontiguousarray(c), (side, side), interpolation=interpolation)
                               for c in crops]))
    return views
