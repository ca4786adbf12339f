"""The clip store: each ingested clip's arrays in one .npz, written atomically."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Clip:
    frames: np.ndarray  # (T, S, S, 3) uint8, aligned face crops
    landmarks: np.ndarray  # (T, 478, 2) float32, in crop pixels
    transforms: np.ndarray  # (T, 2, 3) float32, source frame pixels -> crop pixels
    audio: np.ndarray  # (T * sample_rate / fps,) int16 mono


def save_clip(path: Path, clip: Clip) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, frames=clip.frames, landmarks=clip.landmarks, transforms=clip.transforms, audio=clip.audio)
    os.replace(tmp, path)


def load_clip(path: str | Path) -> Clip:
    with np.load(path) as z:
        return Clip(z["frames"], z["landmarks"], z["transforms"], z["audio"])
