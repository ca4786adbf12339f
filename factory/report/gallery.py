"""The gallery's clips: real | synthetic | difference side by side, as a looping animated WebP.

Pairs are picked from the table (evenly over the kept pairs, plus a few set aside by a
threshold), and only the shards holding them are read (local files, or objects streamed through
fsspec when the run lies under a URL: manifests.reader.shard_samples).
"""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
from PIL import Image

from factory import storage
from manifests.reader import decode_sample, shard_samples

log = logging.getLogger(__name__)

PANEL = 160  # pixels per side of each of the three panels
MAX_FRAMES = 50  # longer clips are shown at every k-th frame (and k times the frame duration)
FPS = 25
DIFF_GAIN = 4.0  # as the previews (factory.previews): small lip changes show


def pick(pairs: list[dict[str, Any]], kept: int, set_aside: int) -> list[dict[str, Any]]:
    """Up to `kept` kept pairs spread evenly over the run (by key), then up to `set_aside` pairs
    that failed a threshold but sit in rejected shards. Deterministic."""
    with_bytes = sorted((r for r in pairs if r.get("shard")), key=lambda r: r["key"])
    chosen = _spread([r for r in with_bytes if r["fate"] == "kept"], kept)
    return chosen + _spread([r for r in with_bytes if r["fate"] == "rejected"], set_aside)


def _spread(rows: list, n: int) -> list:
    if n <= 0 or not rows:
        return []
    if len(rows) <= n:
        return rows
    return [rows[int(i * len(rows) / n)] for i in range(n)]


def samples(out: str | Path, rows: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(table row, decoded sample) for each row, read from the shards the rows name, in their order;
    a shard that cannot be read is skipped (and logged)."""
    wanted = {r["key"]: r for r in rows}
    found: dict[str, dict[str, Any]] = {}
    for shard in dict.fromkeys(storage.join(out, r["shard"]) for r in rows):
        try:
            for sample in shard_samples([shard]):
                if sample["__key__"] in wanted:  # the whole sample: the reader rebuilds `syn` from its parts
                    found[sample["__key__"]] = decode_sample(sample)
        except (OSError, ValueError) as exc:  # a shard gone or damaged: its pairs are left out, the rest shown
            log.warning("report: pairs of %s left out of the gallery: %s", shard, exc)
    for row in rows:
        if row["key"] in found:
            yield row, found[row["key"]]


def strip_frames(real: np.ndarray, syn: np.ndarray, panel: int = PANEL) -> list[np.ndarray]:
    """Frames of real | synthetic | |difference| x gain, each panel `panel` pixels high."""
    n = min(len(real), len(syn))
    step = max(1, math.ceil(n / MAX_FRAMES))
    frames = []
    for t in range(0, n, step):
        r, s = real[t], syn[t]
        diff = np.clip(np.abs(r.astype(np.int16) - s.astype(np.int16)) * DIFF_GAIN, 0, 255).astype(np.uint8)
        w = max(1, round(panel * r.shape[1] / r.shape[0]))
        frames.append(np.concatenate([cv2.resize(p, (w, panel), interpolation=cv2.INTER_AREA)
                                      for p in (r, s, diff)], axis=1))
    return frames


def animated_webp(frames: list[np.ndarray], fps: float, quality: int = 60) -> bytes:
    """A looping (loop=0: forever) animated WebP of RGB uint8 frames."""
    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="WEBP", save_all=True, append_images=images[1:], loop=0,
                   duration=max(20, round(1000 / fps)), quality=quality, method=4)
    return buf.getvalue()


def clip_of(sample: dict[str, Any]) -> bytes | None:
    """The gallery clip of a decoded sample, or None when it has no real and synthetic video."""
    real, syn = sample.get("real"), sample.get("syn")
    if real is None or syn is None or not len(real) or not len(syn):
        return None
    n = min(len(real), len(syn))
    step = max(1, math.ceil(n / MAX_FRAMES))
    return animated_webp(strip_frames(real, syn), FPS / step)
