"""Choose each clip's alternative audio in-domain: another clip of the same speaker whose mouth
moves differently, so the re-dubbed clip differs from the real one in the lips."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from dataclasses import dataclass

from factory.records import Record


@dataclass
class PairConfig:
    cross_video: bool = False  # also pair clips of the same speaker from other videos
    min_mouth_difference: float = 0.0  # mouth-opening difference (template px) below which no pair is made
    speakers: str = "video"  # speakers are face clusters: "video" (within each video), "all" (across videos), "file"
    speaker_csim: float = 0.92  # clips of one speaker average at least this face similarity (dlib)


def mouth_difference(a: list[float], b: list[float]) -> float:
    """Mean frame-by-frame difference in mouth opening (crop pixels) when b's mouth replaces a's."""
    n = min(len(a), len(b))
    return float(np.mean(np.abs(np.asarray(a[:n]) - np.asarray(b[:n]))))


def make_pairs(clips: list[Record], cfg: PairConfig) -> list[Record]:
    """One pair record per clip (keyed by the real clip), rejected when no alternative fits.

    Deterministic: the same clips give the same pairs whatever order they arrive in, which is
    what lets a resumed run skip exactly the pairs it already wrote.
    """
    groups: dict[str, list[Record]] = defaultdict(list)
    for clip in sorted(clips, key=lambda c: c.key):
        group = clip.meta["speaker"] if cfg.cross_video else f'{clip.meta["speaker"]}/{clip.meta["video_key"]}'
        groups[group].append(clip)
    ends = {(c.meta["video_key"], c.meta["frame_range"][1]): c for c in clips}
    pairs = []
    for members in groups.values():
        for clip in members:
            pair = _pair_for(clip, members, cfg)
            before = ends.get((clip.meta["video_key"], clip.meta["frame_range"][0]))
            if before is not None and not pair.rejected:  # the frames just before: a generator's motion frames
                pair.meta["motion_clip_path"] = before.meta["clip_path"]
            pairs.append(pair)
    return pairs


def _pair_for(clip: Record, members: list[Record], cfg: PairConfig) -> Record:
    meta = {k: v for k, v in clip.meta.items() if k != "mouth_open"}
    pair = Record(key=clip.key, kind="pair", meta=meta)
    others = [m for m in members if m.key != clip.key]
    if not others:
        return pair.reject("no_alternative_clip", "pair")
    scored = [(mouth_difference(clip.meta["mouth_open"], o.meta["mouth_open"]), o.key, o) for o in others]
    diff, _, alt = max(scored, key=lambda s: (s[0], s[1]))
    meta.update(alt_key=alt.key, alt_clip_path=alt.meta["clip_path"], alt_frame_range=alt.meta["frame_range"],
                mouth_difference=round(diff, 3))
    if diff < cfg.min_mouth_difference:
        return pair.reject("alternative_too_similar", "pair")
    return pair
