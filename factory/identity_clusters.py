"""Speakers as people: group clips by the face they show, not by the file they came from.

A video with two people on screen in turn (an interview, a talk show) holds two speakers. Each
clip carries one face embedding (its frames' mean, from ingest); clips are clustered by cosine
similarity (average linkage: a clip joins a group it resembles on the whole, not through one
look-alike) and each cluster becomes a speaker. Within each video by default (`pair.speakers:
video`), or across all videos (`all`: the same person in several files is one speaker), or not
at all (`file`: one speaker per video, or the speaker map's).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage

from factory.records import Record


def cluster_labels(embeddings: np.ndarray, min_csim: float) -> list[int]:
    """0, 1, 2, ... per row: rows in one cluster average at least `min_csim` cosine to each other.
    Numbered in order of first appearance, so the same clips always get the same labels."""
    if len(embeddings) == 1:
        return [0]
    tree = linkage(embeddings, method="average", metric="cosine")
    raw = fcluster(tree, t=1.0 - min_csim, criterion="distance")
    order: dict[int, int] = {}
    return [order.setdefault(int(label), len(order)) for label in raw]


def assign_speakers(clips: list[Record], mode: str, min_csim: float) -> list[Record]:
    """Set each clip's `speaker` from its identity cluster (clips without an embedding keep theirs)."""
    if mode == "file":
        return clips
    if mode not in ("video", "all"):
        raise ValueError(f"pair.speakers must be 'file', 'video' or 'all', not {mode!r}")
    groups: dict[str, list[Record]] = defaultdict(list)
    for clip in sorted(clips, key=lambda c: c.key):
        if clip.meta.get("identity") is not None:
            groups[clip.meta["video_key"] if mode == "video" else "all"].append(clip)
    for group, members in groups.items():
        labels = cluster_labels(np.array([m.meta["identity"] for m in members]), min_csim)
        for clip, label in zip(members, labels):
            clip.meta["file_speaker"] = clip.meta["speaker"]
            base = clip.meta["speaker"] if mode == "video" else "person"
            clip.meta["speaker"] = f"{base}#{label}"
    return clips
