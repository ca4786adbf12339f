"""Pair previews a person can look at: rows of frames, columns real | synthetic | difference;
written to OUT/previews/KEY.jpg, OUT a folder or an fsspec URL (one object each)."""

from __future__ import annotations

import os

import cv2
import numpy as np

from factory import storage
from factory.metrics.frames import evenly_spaced

PREVIEWS = "previews"  # inside the run's output


def preview_image(real: np.ndarray, syn: np.ndarray, rows: int = 3, gain: float = 4.0) -> np.ndarray:
    """RGB uint8 grid; the difference is amplified `gain` times so small lip changes show."""
    picks = evenly_spaced(len(real), rows)
    lines = []
    for t in picks:
        diff = np.clip(np.abs(real[t].astype(np.int16) - syn[t].astype(np.int16)) * gain, 0, 255).astype(np.uint8)
        lines.append(np.concatenate([real[t], syn[t], diff], axis=1))
    return np.concatenate(lines, axis=0)


def preview_jpeg(real: np.ndarray, syn: np.ndarray) -> bytes:
    image = preview_image(real, syn)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return data.tobytes() if ok else b""


def preview_location(out: str | os.PathLike, key: str) -> str:
    """Where a pair's preview lives: OUT/previews/KEY.jpg (a path, or a URL under a URL)."""
    return storage.join(out, PREVIEWS, f"{key}.jpg")


def write_preview(out: str | os.PathLike, key: str, data: bytes) -> str:
    """Write a preview whole (atomic rename locally, one PUT on object storage); where it went."""
    location = preview_location(out, key)
    storage.put_bytes(location, data)
    return location
