"""Relighting of the face, identical on both sides of a pair: a static change of colour and
intensity, or a light that moves and changes colour over time, shaded from the face's geometry
(augment/face_geometry.py). Only the face changes: every pixel outside the face oval's hull is
the original pixel, so the relit face sits in an unchanged room, as under a real lamp.

All of it follows from the parameters (the face's oval and nose tip per frame included), so the
same parameters relight the same pixels: the stage records them, augment/replay.py applies them.
Static relighting is a per-channel gain, so it inverts exactly where nothing clipped."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from augment.face_geometry import face_alpha, face_normals


@dataclass
class RelightParams:
    kind: str  # "static" or "dynamic"
    gain: tuple[float, float, float]  # per-channel (chromaticity x intensity)
    light_from: tuple[float, float]  # dynamic: light direction (x, y) at the first frame
    light_to: tuple[float, float]  # ... and at the last
    strength: float  # dynamic: how much the shading varies across the face
    tint_to: tuple[float, float, float]  # dynamic: gain at the last frame (interpolated from `gain`)
    oval: list  # per frame: the face oval's points [[x, y], ...] in crop pixels
    nose: list  # per frame: the nose tip [x, y] in crop pixels

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RelightParams":
        tuples = ("gain", "light_from", "light_to", "tint_to")  # JSON gives lists back
        return cls(**{k: tuple(v) if k in tuples else v for k, v in d.items()})


def sample_params(rng: np.random.Generator, oval: list, nose: list) -> RelightParams:
    kind = "static" if rng.random() < 0.5 else "dynamic"
    intensity = float(rng.uniform(0.6, 1.25))

    def tint():
        return tuple(float(intensity * g) for g in rng.uniform(0.85, 1.15, 3))

    def direction():
        angle = rng.uniform(0, 2 * np.pi)
        return float(np.cos(angle)), float(np.sin(angle))

    return RelightParams(kind, tint(), direction(), direction(), float(rng.uniform(0.2, 0.5)), tint(), oval, nose)


def gains(p: RelightParams, n_frames: int, size: int) -> np.ndarray:
    """(T, S, S, 3) multiplicative gain per pixel and frame: exactly 1 outside the face."""
    if len(p.oval) != n_frames:
        raise ValueError(f"relight parameters describe {len(p.oval)} frames, the clip has {n_frames}")
    out = np.empty((n_frames, size, size, 3), np.float32)
    for i in range(n_frames):
        t = i / max(n_frames - 1, 1)
        if p.kind == "static":
            light = np.array(p.gain, np.float32)[None, None]  # one colour change over the whole face
        else:
            lx, ly = [(1 - t) * a + t * b for a, b in zip(p.light_from, p.light_to)]
            direction = np.array([lx, ly, 0.8], np.float32)
            direction /= np.linalg.norm(direction)
            normals = face_normals(p.oval[i], p.nose[i], size)
            tint = np.array([(1 - t) * a + t * b for a, b in zip(p.gain, p.tint_to)], np.float32)
            shade = 1.0 + p.strength * (np.clip(normals @ direction, 0, 1) - 0.5)
            light = shade[..., None] * tint
        alpha = face_alpha(p.oval[i], size)[..., None]
        out[i] = 1.0 + alpha * (light - 1.0)  # alpha is exactly 0 outside the face: gain exactly 1
    return out


def apply(frames: np.ndarray, p: RelightParams) -> np.ndarray:
    return apply_gains(frames, gains(p, len(frames), frames.shape[1]))


def apply_gains(frames: np.ndarray, g: np.ndarray) -> np.ndarray:
    """`frames` relit by gains(...): the gains depend on the parameters alone, so a pair's two
    sides share one computation (it is most of a replay's cost)."""
    return np.clip(np.rint(frames.astype(np.float32) * g), 0, 255).astype(np.uint8)


def invert(frames: np.ndarray, p: RelightParams) -> np.ndarray:
    """Undo `apply` (exact up to rounding where no channel clipped)."""
    g = gains(p, len(frames), frames.shape[1])
    return np.clip(np.rint(frames.astype(np.float32) / g), 0, 255).astype(np.uint8)
