"""The clip store: each ingested clip's arrays in one .npz, written atomically."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from factory.files import atomic_path


@dataclass
class Clip:
    frames: np.ndarray  # (T, S, S, 3) uint8, aligned face crops
    landmarks: np.ndarray  # (T, 478, 2) float32, in crop pixels
    transforms: np.ndarray  # (T, 2, 3) float32, source frame pixels -> crop pixels
    audio: np.ndarray  # (T * sample_rate / fps,) int16 mono


def save_clip(path: Path, clip: Clip) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".tmp.npz") as tmp:  # np.savez would append .npz to a bare .tmp
        np.savez(tmp, frames=clip.frames, landmarks=clip.landmarks, transforms=clip.transforms, audio=clip.audio)


def load_clip(path: str | Path) -> Clip:
    with np.load(path) as z:
        return Clip(z["frames"], z["landmarks"], z["transforms"], z["audio"])


def occlusion_path(clip_path: str | Path, tag: str) -> Path:
    """Occluder masks of a clip live beside it (the occlusion stage may run later than ingest),
    named by the tag of the settings that made them."""
    return Path(clip_path).with_suffix(f".occlusion-{tag}.npz")


def save_occlusion(path: str | Path, masks: np.ndarray, occluders_json: str = "[]") -> None:
    """(T, S, S) bool occluder masks, bit-packed (a 77-frame 256 clip: 0.6 MB instead of 5),
    with the VLM's labelled boxes as JSON, at `path` (see occlusion_path)."""
    with atomic_path(path, suffix=".tmp.npz") as tmp:
        np.savez(tmp, bits=np.packbits(masks.astype(bool), axis=-1), shape=np.array(masks.shape),
                 occluders=np.array(occluders_json))


def load_occlusion(path: str | Path) -> np.ndarray:
    with np.load(path) as z:
        shape = tuple(z["shape"])
        return np.unpackbits(z["bits"], axis=-1, count=shape[-1]).astype(bool).reshape(shape)
