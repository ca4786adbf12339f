"""Readers for training jobs: a manifest in, decoded (synthetic, real) pairs out.

A decoded sample (format 2, see manifests.sample and the README's "Sample contents"):
`syn`, `real` (T,S,S,3) uint8, equal wherever `alpha` == 0; `alpha` (T,S,S) uint8; `motion`
(m,S,S,3) real crops before the clip (m = 0: none); `speech` (T,) bool; `real_audio` (what the
real lips say), `alt_audio` (what the synthetic lips say); `real_landmarks`, `syn_landmarks`
(T,478,2, no NaN) with `*_landmarks_valid` (T,) bool; `transforms`, `mask`, `meta`.
Format-1 samples (whole syn.mp4, no alpha) decode as before.

A manifest and its shards may lie on object storage: `manifest_path` is a local path or an fsspec
URL (`s3://bucket/run/manifest.json`, factory/storage.py), its shards' URLs are joined to it, and
`shard_samples` streams a URL's bytes through fsspec where webdataset would open a local file.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import soundfile as sf
import webdataset as wds
from webdataset.gopen import gopen
from webdataset.tariterators import group_by_keys, tar_file_expander

from factory import storage
from manifests.format import read_manifest
from manifests.sample import read_alpha, rebuild_syn
from manifests.writer import shard_intact


class DamagedShard(ValueError):
    """A shard whose bytes are not what the manifest lists: never read as training data."""


def shard_urls(manifest_path: str | Path, check: bool = False) -> list[str]:
    """The training shards' paths (URLs beside a URL manifest); with `check`, each file's size and
    md5 are compared with the manifest's first (DamagedShard names the first that differs)."""
    manifest = read_manifest(manifest_path)
    root = storage.parent(manifest_path)
    urls = []
    for entry in manifest["shardlist"]:
        path = storage.join(root, entry["url"])
        if check and "md5sum" in entry and not intact(path, entry):
            raise DamagedShard(f"{path}: not the shard the manifest lists (missing, or size/md5 differ); "
                               f"`factory verify {root}` reports it, rerunning the run repairs it")
        urls.append(path)
    return urls


def intact(path: str, entry: dict[str, Any]) -> bool:
    """The shard's size and md5 are the manifest entry's."""
    if not storage.is_url(path):
        return shard_intact(Path(path), entry)
    return storage.isfile(path) and storage.size(path) == entry["filesize"] and storage.md5(path) == entry["md5sum"]


def open_shards(sources: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """webdataset's url_opener: a local shard opened as webdataset opens it, a URL through fsspec."""
    for source in sources:
        url = source["url"]
        yield dict(source, stream=storage.open_file(url, "rb") if storage.is_url(url) else gopen(url))


def tar_samples(sources: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """webdataset's tarfile_to_samples over local paths and URLs alike: raw samples (member -> bytes)."""
    return group_by_keys(tar_file_expander(open_shards(sources)))


def shard_samples(urls: list[str]) -> wds.DataPipeline:
    """The raw samples of these shards, in order."""
    return wds.DataPipeline(wds.SimpleShardList(urls), tar_samples)


def _decode_mp4(data: bytes) -> np.ndarray:
    import av

    from factory.media.video import frame_to_rgb  # the file's own colour tags (BT.709 limited)

    with av.open(io.BytesIO(data)) as container:
        return np.stack([frame_to_rgb(f) for f in container.decode(video=0)])


def decode_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """One raw webdataset sample (member name -> bytes) to arrays; usable as `WebDataset.map`."""
    out: dict[str, Any] = {"key": sample["__key__"]}
    for name, data in sample.items():
        if name.startswith("__"):
            continue
        if name == "alpha.npz":
            out["alpha"] = read_alpha(data)
        elif name.endswith(".mp4"):
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
    if "syn_region" in out:  # format 2: syn is decoded real outside the alpha, the region inside
        region = out.pop("syn_region")
        out["syn"] = rebuild_syn(out["real"], region, out["alpha"], out["meta"]["storage"]["syn_box"])
        out.setdefault("motion", out["real"][:0])  # no contiguous clip before this one
    return out


def with_augmentation(sample: dict[str, Any], masks: bool = True) -> dict[str, Any]:
    """The decoded sample with its recorded augmentation (meta["augment"], drawn by the factory
    for a share of pairs) applied identically to `syn` and `real`; the clean frames stay as
    `clean_syn` / `clean_real`, and (with `masks`: it costs a third of the replay) an occlusion's
    own mask as `augment_mask`."""
    recorded = sample.get("meta", {}).get("augment")
    if not recorded:
        return sample
    from augment.replay import apply_augmentation, occluder_masks

    out = dict(sample, clean_real=sample["real"], clean_syn=sample["syn"])
    out["real"], out["syn"] = apply_augmentation(sample["real"], sample["syn"], recorded)
    masks = occluder_masks(recorded) if masks else None
    if masks is not None:
        out["augment_mask"] = masks
    return out


def iter_pairs(manifest_path: str | Path, decode: bool = True, split: str | None = None,
               augment: bool = True, check: bool = True) -> Iterator[dict[str, Any]]:
    """Samples of every shard in the manifest, decoded (see the module's docstring).
    `split="train"` or `"heldout"` keeps that side of `pair.heldout_share` (speakers never cross).
    `augment` applies each pair's recorded augmentation (with_augmentation); the shards hold
    every pair clean, so `augment=False` reads them as made. `check` compares each shard with the
    manifest's size and md5 before reading (DamagedShard: a bit flip is not training data)."""
    urls = shard_urls(manifest_path, check=check)
    if not urls:  # every pair was filtered out: an empty training set, not an error
        return
    for sample in shard_samples(urls):
        if split is not None and json.loads(sample["meta.json"]).get("split", "train") != split:
            continue
        if not decode:
            yield sample
        else:
            decoded = decode_sample(sample)
            yield with_augmentation(decoded) if augment else decoded
