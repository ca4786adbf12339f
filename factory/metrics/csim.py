"""Identity similarity (CSIM) between two sets of face embeddings."""

from __future__ import annotations

import numpy as np


def csim(real: np.ndarray, syn: np.ndarray) -> float:
    """Mean cosine of row-aligned unit embeddings."""
    return float(np.mean(np.sum(real * syn, axis=1)))
