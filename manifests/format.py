"""The manifest: a `wids-shard-index-v1` JSON that webdataset's wids and our reader both load,
plus the run's config and stats. Written atomically to a local path, or as one object (one PUT)
to an fsspec URL (factory/storage.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from factory import storage
from factory.files import atomic_write, file_digest
from manifests.sample import SAMPLE_FORMAT

KIND = "wids-shard-index-v1"


def shard_entry(path: Path, nsamples: int, root: Path) -> dict[str, Any]:
    return {"url": path.relative_to(root).as_posix(), "nsamples": nsamples,
            "filesize": path.stat().st_size, "md5sum": file_digest(path, "md5")}


def write_manifest(path: str | Path, shards: list[dict[str, Any]], config: dict, stats: dict,
                   rejected: list[dict[str, Any]] = (), sources: list[dict[str, Any]] = (),
                   table: str = "samples.parquet", sample_format: int = SAMPLE_FORMAT) -> None:
    run = storage.name(storage.parent(path)) if storage.is_url(path) else Path(path).parent.name
    write_json_atomic(path, manifest_json(run, shards, config, stats, rejected, sources, table,
                                          sample_format))


def manifest_json(name: str, shards: list[dict[str, Any]], config: dict, stats: dict,
                  rejected: list[dict[str, Any]] = (), sources: list[dict[str, Any]] = (),
                  table: str = "samples.parquet", sample_format: int = SAMPLE_FORMAT) -> dict[str, Any]:
    """The manifest of run `name`. `shardlist` is what training reads (wids reads only that);
    `rejected_shardlist` holds pairs that failed a threshold, `source_shardlist` (after a refilter)
    the run's original kept shards; `table` the per-sample table that goes with these shards;
    `sample_format` how a sample is stored (manifests.sample; absent in older manifests: 1, a whole
    syn.mp4)."""
    by_url = lambda s: s["url"]  # noqa: E731
    manifest = {"__kind__": KIND, "wids_version": 1, "name": name, "sample_format": sample_format,
                "shardlist": sorted(shards, key=by_url), "rejected_shardlist": sorted(rejected, key=by_url),
                "table": table, "config": config, "stats": stats}
    if sources:
        manifest["source_shardlist"] = sorted(sources, key=by_url)
    return manifest


def read_manifest(path: str | Path) -> dict[str, Any]:
    manifest = json.loads(storage.read_text(path))  # a local path or a URL
    if manifest.get("__kind__") != KIND:
        raise ValueError(f"{path} is not a {KIND} manifest")
    return manifest


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Atomic rename locally; on a URL one PUT, so the object appears whole or not at all."""
    if storage.is_url(path):
        storage.put_bytes(path, json_text(obj))
        return
    atomic_write(path, json_text(obj))


def json_text(obj: Any) -> str:
    """How a manifest (or any JSON the factory writes) is laid out: one copy, local or object."""
    return json.dumps(obj, indent=1, sort_keys=False)
