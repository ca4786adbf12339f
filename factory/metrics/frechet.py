"""Fréchet distance between two sets of features (FID over image features, FVD over video
features): the distance between the Gaussians fitted to each set,

    d² = |mu_a - mu_b|² + Tr(S_a + S_b - 2 (S_a S_b)^½)

as in Heusel et al. (2017) and the pytorch-fid / torchmetrics implementations. The feature
network is the caller's (an Inception or an I3D from a local path, or any module): these are
pure functions of the features and of a model passed in.

Few samples make the covariance rank-deficient; the square root then gets a small diagonal
offset (pytorch-fid's fallback) and the number is still a distance, but noisy: report the sample
counts beside it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import linalg


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of (N, D) features (N >= 2)."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need (N >= 2, D) features for a covariance, got shape {x.shape}")
    return x.mean(0), np.cov(x, rowvar=False)


def frechet_distance(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray,
                     eps: float = 1e-6) -> float:
    diff = mu_a - mu_b
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(cov_a)) * eps
        covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    covmean = np.real(covmean)  # numerical error leaves tiny imaginary parts
    value = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean)
    return float(max(value, 0.0))  # rounding can dip a hair below zero for identical sets


def feature_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between two (N, D) feature sets."""
    return frechet_distance(*gaussian_stats(features_a), *gaussian_stats(features_b))


def extract(model: Callable, batches, **kwargs) -> np.ndarray:
    """(N, D) float64 features of `model(batch, **kwargs)` over torch batches, without gradients."""
    import torch

    out = []
    with torch.no_grad():
        for batch in batches:
            feats = model(batch, **kwargs)
            out.append(feats.reshape(len(batch), -1).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


def image_batches(frames: np.ndarray, size: int, batch: int = 16, device: str = "cpu"):
    """(N, 3, size, size) float32 batches in 0..255 from (N, H, W, 3) uint8 frames (bilinear,
    antialiased resize): the input convention of the FID Inception TorchScripts."""
    import torch
    import torch.nn.functional as F

    for i in range(0, len(frames), batch):
        x = torch.from_numpy(np.ascontiguousarray(frames[i:i + batch])).to(device).permute(0, 3, 1, 2).float()
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        yield x


def video_batches(clips: np.ndarray, size: int, batch: int = 4, device: str = "cpu"):
    """(B, 3, T, size, size) float32 batches in -1..1 from (B, T, H, W, 3) uint8 clips: the input
    convention of the I3D TorchScript FVD uses (StyleGAN-V, fvd-comparison)."""
    import torch
    import torch.nn.functional as F

    for i in range(0, len(clips), batch):
        x = torch.from_numpy(np.ascontiguousarray(clips[i:i + batch])).to(device).float()
        b, t, h, w, c = x.shape
        x = x.reshape(b * t, h, w, c).permute(0, 3, 1, 2)
        if (h, w) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        yield (x / 127.5 - 1).reshape(b, t, c, size, size).permute(0, 2, 1, 3, 4).contiguous()


def fid(model: Callable, frames_a: np.ndarray, frames_b: np.ndarray, size: int = 299,
        device: str = "cpu", **kwargs) -> float:
    """FID between two sets of (N, H, W, 3) uint8 frames, with `model` as the feature network."""
    fa = extract(model, image_batches(frames_a, size, device=device), **kwargs)
    fb = extract(model, image_batches(frames_b, size, device=device), **kwargs)
    return feature_distance(fa, fb)


def fvd(model: Callable, clips_a: np.ndarray, clips_b: np.ndarray, size: int = 224,
        device: str = "cpu", **kwargs) -> float:
    """FVD between two sets of (B, T, H, W, 3) uint8 clips, with `model` as the video network."""
    fa = extract(model, video_batches(clips_a, size, device=device), **kwargs)
    fb = extract(model, video_batches(clips_b, size, device=device), **kwargs)
    return feature_distance(fa, fb)
