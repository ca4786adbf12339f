"""Relighting, identical on both sides of a pair: a static change of colour and intensity, or a
light that moves and changes colour over time, shading the face like a sphere lit from one side.
Static relighting is a per-channel gain, so it inverts exactly where nothing clipped."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class RelightParams:
    kind: str  # "static" or "dynamic"
    gain: tuple[float, float, float]  # per-channel (chromaticity x intensity)
    light_from: tuple[float, float]  # dynamic: light direction (x, y) at the first frame
    light_to: tuple[float, float]  # ... and at the last
    strength: float  # dynamic: how much the shading varies across the face
    tint_to: tuple[float, float, float]  # dynamic: gain at the last frame (interpolated from `gain`)

    def to_dict(self) -> dict:
        return asdict(self)


def sample_params(rng: np.random.Generator) -> RelightParams:
    kind = "static" if rng.random() < 0.5 else "dynamic"
    intensity = float(rng.uniform(0.6, 1.25))

    def tint():
        return tuple(float(intensity * g) for g in rng.uniform(0.85, 1.15, 3))

    def direction():
        angle = rng.uniform(0, 2 * np.pi)
        return float(np.cos(angle)), float(np.sin(angle))

    return RelightParams(kind, tint(), direction(), direction(), float(rng.uniform(0.2, 0.5)), tint())


def _sphere_normals(size: int) -> np.ndarray:
    """(size, size, 3) unit normals of a sphere filling the crop: smooth face-like shading."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    nx, ny = (x - size / 2) / (size / 2), (y - size / 2) / (size / 2)
    nz = np.sqrt(np.clip(1 - nx**2 - ny**2, 0.05, 1))
    n = np.stack([nx, ny, nz], -1)
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def gains(p: RelightParams, n_frames: int, size: int) -> np.ndarray:
    """(T, S, S, 3) multiplicative gain per pixel and frame (static: the same everywhere)."""
    if p.kind == "static":
        return np.broadcast_to(np.array(p.gain, np.float32), (n_frames, size, size, 3))
    normals = _sphere_normals(size)
    out = np.empty((n_frames, size, size, 3), np.float32)
    for i in range(n_frames):
        t = i / max(n_frames - 1, 1)
        lx, ly = [(1 - t) * a + t * b for a, b in zip(p.light_from, p.light_to)]
        light = np.array([lx, ly, 0.8], np.float32)
        light /= np.linalg.norm(light)
        shade = 1.0 + p.strength * (np.clip(normals @ light, 0, 1) - 0.5)
        tint = np.array([(1 - t) * a + t * b for a, b in zip(p.gain, p.tint_to)], np.float32)
        out[i] = shade[..., None] * tint
    return out


def apply(frames: np.ndarray, p: RelightParams) -> np.ndarray:
    g = gains(p, len(frames), frames.shape[1])
    return np.clip(np.rint(frames.astype(np.float32) * g), 0, 255).astype(np.uint8)


def invert(frames: np.ndarray, p: RelightParams) -> np.ndarray:
    """Undo `apply` (exact up to rounding where no channel clipped)."""
    g = gains(p, len(frames), frames.shape[1])
    return np.clip(np.rint(frames.astype(np.float32) / g), 0, 255).astype(np.uint8)
