"""The dubbed crop back into the video frame, through the inverse of the alignment that cut it.

Only the frame box the crop was drawn from is touched; the alpha is warped with the crop, and
where it is 0 the frame's own pixels are returned unchanged (factory.faces.masks.composite).
"""

from __future__ import annotations

import cv2
import numpy as np

from factory.faces.align import source_box
from factory.faces.masks import composite


def paste_back(frame: np.ndarray, crop: np.ndarray, alpha: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """`frame` (H, W, 3) with `crop` (S, S, 3) blended in by `alpha` (S, S) uint8, where
    `transform` (2, 3) maps frame pixels to crop pixels (the clip's stored transform)."""
    size = crop.shape[0]
    x0, y0, x1, y1 = source_box(transform, size, frame.shape, pad=2)
    if x1 <= x0 or y1 <= y0:
        return frame
    shifted = np.asarray(transform, np.float64).copy()
    shifted[:, 2] += shifted[:, :2] @ [x0, y0]  # region pixel (u, v) is frame pixel (x0 + u, y0 + v)
    box = (x1 - x0, y1 - y0)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP  # the matrix maps the output (frame) into the crop
    face = cv2.warpAffine(crop, shifted, box, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    weight = cv2.warpAffine(alpha, shifted, box, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    out = frame.copy()
    out[y0:y1, x0:x1] = composite(frame[y0:y1, x0:x1], face, weight)
    return out
