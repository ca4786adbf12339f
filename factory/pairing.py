"""Choose each clip's alternative audio in-domain: another clip of the same speaker whose mouth
moves differently, so the re-dubbed clip differs from the real one in the lips.

The alternative is a seeded random draw, not the most different clip: the argmax favours
outliers (tracking glitches, yawns) and hands one alternative to many clips. Candidates are the
speaker's clips whose mouth difference reaches `min_mouth_difference`, never one overlapping the
real clip in time (its lips would leak, time-shifted, into V_syn), and among them the least used
so far (no clip serves more than `max_reuse` times).
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from factory.records import Record


@dataclass
class PairConfig:
    cross_video: bool = False  # also pair clips of the same speaker from other videos
    min_mouth_difference: float = 0.0  # mouth-opening difference (template px) below which no pair is made
    max_reuse: int | None = 2  # how many pairs one clip may serve as the alternative of; null: unbounded
    heldout_share: float = 0.0  # share of speakers (people, per video by default) whose pairs are held out
    speakers: str = "video"  # speakers are face clusters: "video" (within each video), "all" (across videos), "file"
    speaker_csim: float = 0.92  # clips of one speaker average at least this face similarity (dlib)


def mouth_difference(a: list[float], b: list[float]) -> float:
    """Mean frame-by-frame difference in mouth opening (crop pixels) when b's mouth replaces a's."""
    n = min(len(a), len(b))
    return float(np.mean(np.abs(np.asarray(a[:n]) - np.asarray(b[:n]))))


def overlaps(a: Record, b: Record) -> bool:
    """Same video and intersecting frame ranges: the two clips share real frames."""
    if a.meta["video_key"] != b.meta["video_key"]:
        return False
    (a0, a1), (b0, b1) = a.meta["frame_range"], b.meta["frame_range"]
    return a0 < b1 and b0 < a1


def clip_rng(seed: int, key: str) -> np.random.Generator:
    """A generator that depends on the run's seed and the clip's key only (not on arrival order)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def make_pairs(clips: list[Record], cfg: PairConfig, seed: int = 0) -> list[Record]:
    """One pair record per clip (keyed by the real clip), rejected when no alternative fits.

    Deterministic: the same clips and seed give the same pairs whatever order they arrive in
    (clips are visited in key order, each draw is seeded by seed + key), which is what lets a
    resumed run skip exactly the pairs it already wrote.
    """
    groups: dict[str, list[Record]] = defaultdict(list)
    for clip in sorted(clips, key=lambda c: c.key):
        group = clip.meta["speaker"] if cfg.cross_video else f'{clip.meta["speaker"]}/{clip.meta["video_key"]}'
        groups[group].append(clip)
    ends = {(c.meta["video_key"], c.meta["frame_range"][1]): c for c in clips}
    pairs = []
    for name in sorted(groups):
        members, uses = groups[name], Counter()
        for clip in members:
            pair = _pair_for(clip, members, cfg, uses, clip_rng(seed, clip.key))
            before = ends.get((clip.meta["video_key"], clip.meta["frame_range"][0]))
            if before is not None and not pair.rejected:  # the frames just before: a generator's motion frames
                pair.meta["motion_clip_path"] = before.meta["clip_path"]
            pairs.append(pair)
    return sorted(pairs, key=lambda p: p.key)


def _pair_for(clip: Record, members: list[Record], cfg: PairConfig, uses: Counter,
              rng: np.random.Generator) -> Record:
    meta = {k: v for k, v in clip.meta.items() if k != "mouth_open"}
    pair = Record(key=clip.key, kind="pair", meta=meta)
    others = [m for m in members if m.key != clip.key and not overlaps(clip, m)]
    if not others:
        return pair.reject("no_alternative_clip", "pair")
    diffs = {o.key: mouth_difference(clip.meta["mouth_open"], o.meta["mouth_open"]) for o in others}
    candidates = [o for o in others if diffs[o.key] >= cfg.min_mouth_difference]
    meta["alt_candidates"] = len(candidates)
    if not candidates:
        closest = max(others, key=lambda o: (diffs[o.key], o.key))  # the best there was, for the record
        meta.update(mouth_difference=round(diffs[closest.key], 3))
        return pair.reject("alternative_too_similar", "pair")
    if cfg.max_reuse is not None:
        candidates = [o for o in candidates if uses[o.key] < cfg.max_reuse]
        if not candidates:
            return pair.reject("alternatives_used_up", "pair")
    fewest = min(uses[o.key] for o in candidates)
    least_used = [o for o in candidates if uses[o.key] == fewest]  # in key order: members are sorted
    alt = least_used[int(rng.integers(len(least_used)))]
    uses[alt.key] += 1
    meta.update(alt_key=alt.key, alt_clip_path=alt.meta["clip_path"], alt_frame_range=alt.meta["frame_range"],
                mouth_difference=round(diffs[alt.key], 3))
    return pair
