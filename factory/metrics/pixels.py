"""PSNR and SSIM between a generated clip and its reference: frame-aligned (T, H, W, 3) uint8.

PSNR is taken over the whole clip (one mean squared error over every pixel of every frame), so
it is infinite exactly when the two clips are identical, and a single identical frame does not
make a clip's score infinite. SSIM is scikit-image's (Wang et al. 2004: 7x7 uniform window,
colour channels averaged), averaged over frames; 1 for identical clips.
"""

from __future__ import annotations

import numpy as np


def _check(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"clips differ in shape: {a.shape} vs {b.shape}")


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB over the whole clip; inf when a == b."""
    _check(a, b)
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Mean per-frame structural similarity (-1..1; 1 when a == b)."""
    from skimage.metrics import structural_similarity

    _check(a, b)
    return float(np.mean([structural_similarity(x, y, data_range=data_range, channel_axis=-1)
                          for x, y in zip(a, b)]))
