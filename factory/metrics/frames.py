"""Which frames of a clip to look at when a metric or a model cannot afford all of them."""

from __future__ import annotations

import numpy as np


def evenly_spaced(n: int, k: int) -> np.ndarray:
    """Up to k frame indices spread evenly over n frames: sorted, unique, the first and the last
    frame included when k >= 2 (k >= n gives every frame; n == 0 or k == 0 gives none)."""
    return np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(int))
