"""Which frames of a clip to look at."""

from __future__ import annotations

import numpy as np


def evenly_spaced(n: int, k: int) -> np.ndarray:
    """Up to k frame indices spread evenly over n frames (first and last included)."""
    return np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(int))
