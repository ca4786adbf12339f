"""What every trainer on clip stores starts from: the kept clip records of its stores, and a
held-out set of whole videos (never frames, so no held-out face or voice is seen in training)."""

from __future__ import annotations

import numpy as np

from factory.clip_store import ClipStore
from factory.config import ConfigError
from factory.records import Record


def clip_records(clip_stores: list[str], max_clips: int | None = None,
                 key: str = "clip_stores") -> list[Record]:
    """The kept clips of the stores, sorted by key (the first `max_clips`); ConfigError naming
    `key` when none are given or found."""
    if not clip_stores:
        raise ConfigError(f"config key '{key}' is empty: give folders (or URLs) written by `factory ingest`")
    records = []
    for path in clip_stores:
        store = ClipStore.open(path)
        records += [r for r in store.records() if r.kind == "clip" and not r.rejected and "clip_path" in r.meta]
    records = sorted(records, key=lambda r: r.key)[:max_clips]
    if not records:
        raise ConfigError(f"no clips in {key}={clip_stores!r}")
    return records


def video_split(video_keys: list[str], share: float, seed: int) -> set[str]:
    """Held-out video keys: a seeded choice of round(share * n) videos (at least one if share > 0)."""
    if share <= 0 or len(video_keys) < 2:
        return set()
    rng = np.random.default_rng(seed)
    n = min(len(video_keys) - 1, max(1, round(share * len(video_keys))))
    return set(rng.choice(sorted(video_keys), n, replace=False).tolist())
