"""The clip store: each ingested clip's arrays in one .npz, written atomically: on a local disk
through a temporary file and a rename, on object storage (a URL) as one object in one PUT."""

from __future__ import annotations

import io
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np

from factory import storage
from factory.files import atomic_path


@dataclass
class Clip:
    frames: np.ndarray  # (T, S, S, 3) uint8, aligned face crops
    landmarks: np.ndarray  # (T, 478, 2) float32, in crop pixels
    transforms: np.ndarray  # (T, 2, 3) float32, source frame pixels -> crop pixels
    audio: np.ndarray  # (T * sample_rate / fps,) int16 mono


def save_clip(path: str | Path, clip: Clip) -> None:
    arrays = dict(frames=clip.frames, landmarks=clip.landmarks, transforms=clip.transforms, audio=clip.audio)
    if storage.is_url(path):
        storage.put_bytes(path, _npz_bytes(arrays))
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".tmp.npz") as tmp:  # np.savez would append .npz to a bare .tmp
        np.savez(tmp, **arrays)


def load_clip(path: str | Path) -> Clip:
    with open_npz(path) as z:
        return Clip(z["frames"], z["landmarks"], z["transforms"], z["audio"])


def occlusion_path(clip_path: str | Path, tag: str) -> Path | str:
    """Occluder masks of a clip live beside it (the occlusion stage may run later than ingest),
    named by the tag of the settings that made them. A Path for a local clip, a URL for a URL."""
    return with_suffix(clip_path, f".occlusion-{tag}.npz")


def with_suffix(path: str | Path, suffix: str) -> Path | str:
    """Path.with_suffix, also for a URL (only its last part is changed: no Path() on a URL)."""
    if not storage.is_url(path):
        return Path(path).with_suffix(suffix)
    head, _, name = str(path).rpartition("/")
    return f"{head}/{PurePosixPath(name).with_suffix(suffix).name}"


def save_occlusion(path: str | Path, masks: np.ndarray, occluders_json: str = "[]") -> None:
    """(T, S, S) bool occluder masks, bit-packed (a 77-frame 256 clip: 0.6 MB instead of 5),
    with the VLM's labelled boxes as JSON, at `path` (see occlusion_path)."""
    arrays = dict(bits=np.packbits(masks.astype(bool), axis=-1), shape=np.array(masks.shape),
                  occluders=np.array(occluders_json))
    if storage.is_url(path):
        storage.put_bytes(path, _npz_bytes(arrays))
        return
    with atomic_path(path, suffix=".tmp.npz") as tmp:
        np.savez(tmp, **arrays)


def load_occlusion(path: str | Path) -> np.ndarray:
    with open_npz(path) as z:
        shape = tuple(z["shape"])
        return np.unpackbits(z["bits"], axis=-1, count=shape[-1]).astype(bool).reshape(shape)


@contextmanager
def open_npz(path: str | Path) -> Iterator[np.lib.npyio.NpzFile]:
    """np.load of a local .npz, or of an object's bytes fetched in one GET (a clip is read whole)."""
    source = io.BytesIO(storage.read_bytes(path)) if storage.is_url(path) else path
    with np.load(source) as z:
        yield z


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """The .npz file np.savez writes, built in memory (to be put as one object)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()
