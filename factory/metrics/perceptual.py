"""LPIPS (Zhang et al. 2018) between frame-aligned clips, with an `lpips.LPIPS` model passed in
(its backbone weights come from a local path: see factory/eval/models.py)."""

from __future__ import annotations

import numpy as np


def lpips_distance(model, a: np.ndarray, b: np.ndarray, batch: int = 8, device: str = "cpu") -> float:
    """Mean LPIPS over frames of two (T, H, W, 3) uint8 clips (0 when identical; lower is closer)."""
    import torch

    if a.shape != b.shape:
        raise ValueError(f"clips differ in shape: {a.shape} vs {b.shape}")

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1

    scores = []
    with torch.no_grad():
        for i in range(0, len(a), batch):
            scores.append(model(tensor(a[i:i + batch]), tensor(b[i:i + batch])).reshape(-1).cpu().numpy())
    return float(np.concatenate(scores).mean())
