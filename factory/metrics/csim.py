"""CSIM: identity similarity between two clips, from face embeddings computed by the caller."""

from __future__ import annotations

import numpy as np


def csim(real_emb: np.ndarray, syn_emb: np.ndarray) -> float:
    """Mean cosine of row-aligned unit embeddings (row i of each side: the same frame), (N, D)."""
    return float(np.mean(np.sum(real_emb * syn_emb, axis=1)))
