"""Readers for training jobs: a manifest in, decoded (synthetic, real) pairs out."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import soundfile as sf
import webdataset as wds

from manifests.format import read_manifest


def shard_urls(manifest_path: str | Path) -> list[str]:
    manifest_path = Path(manifest_path)
    manifest = read_manifest(manifest_path)
    return [str(manifest_path.parent / s["url"]) for s in manifest["shardlist"]]


def _decode_mp4(data: bytes) -> np.ndarray:
    import av

    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def decode_sample(sample: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"key": sample["__key__"]}
    for name, data in sample.items():
        if name.startswith("__"):
            continue
        if name.endswith(".mp4"):
            out[name[:-4]] = _decode_mp4(data)
        elif name.endswith(".wav"):
            out[name[:-4] + "_audio"] = sf.read(io.BytesIO(data), dtype="int16")[0]
        elif name.endswith(".npy"):
            out[name[:-4]] = np.load(io.BytesIO(data), allow_pickle=False)
        elif name.endswith(".json"):
            out[name[:-5]] = json.loads(data)
        elif name.endswith(".png"):
            import cv2

            out[name[:-4]] = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    return out


def iter_pairs(manifest_path: str | Path, decode: bool = True, split: str | None = None) -> Iterator[dict[str, Any]]:
    """Samples of every shard in the manifest: `syn`/`real` (T,H,W,3) uint8, audio, landmarks, meta.
    `split="train"` or `"heldout"` keeps that side of `pair.heldout_share` (speakers never cross)."""
    urls = shard_urls(manifest_path)
    if not urls:  # every pair was filtered out: an empty training set, not an error
        return
    dataset = wds.WebDataset(urls, shardshuffle=False, empty_check=False)
    for sample in dataset:
        if split is not None and json.loads(sample["meta.json"]).get("split", "train") != split:
            continue
        yield decode_sample(sample) if decode else sample
