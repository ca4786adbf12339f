"""Duplicate videos among the clips, found before pairing (on the driver), so that a video copied
under three names does not give three times its pairs, nor a test split a copy of a training clip.

Exact copies share the source's SHA-256. Near-duplicates (re-encodes, rescales, trims) are found
per clip by a perceptual fingerprint: a 64-bit difference hash (dHash) of every aligned crop,
which rescaling and re-encoding barely change, and the log audio energy under every frame. The
dHash alone would call two videos of one speaker in one setting copies (their crops look alike),
so the speech must match too: a clip is a near-duplicate when, at some frame offset of an earlier
video, its audio envelope correlates and its crops' hashes are close. Trims shift the offset only.

The first in key order is kept; the others are rejected `duplicate_of:<kept clip key>`.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from factory.clips import Clip, load_clip
from factory.records import Record

MIN_ENERGY_CORRELATION = 0.9  # Pearson, log energy per frame over a whole clip
MAX_HASH_DISTANCE = 10.0  # mean differing bits (of 64) between matched crops
PROBE_FRAMES = 8  # crops compared per candidate offset


def dhash(frame: np.ndarray) -> int:
    """64-bit difference hash: is each of 8x8 grey cells brighter than its right neighbour."""
    grey = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), (9, 8), interpolation=cv2.INTER_AREA)
    bits = (grey[:, 1:] > grey[:, :-1]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def energy_envelope(audio: np.ndarray, frames: int) -> np.ndarray:
    """Log RMS of the audio under each video frame (coarse: robust to re-encoding)."""
    per_frame = len(audio) // frames
    chunks = audio[: per_frame * frames].astype(np.float64).reshape(frames, per_frame)
    return np.log1p(np.sqrt((chunks ** 2).mean(1)))


@dataclass
class Fingerprint:
    start: int  # the clip's first frame in its video
    hashes: np.ndarray  # (T,) uint64, dHash per aligned crop
    energy: np.ndarray  # (T,) float, log audio energy per frame


def fingerprint(clip: Clip, start: int) -> Fingerprint:
    return Fingerprint(start, np.array([dhash(f) for f in clip.frames], np.uint64),
                       energy_envelope(clip.audio, len(clip.frames)))


class Timeline:
    """One video's kept clips laid out on its frame axis (NaN / no hash where no clip covers a frame),
    with which kept clip covers each frame."""

    def __init__(self):
        self.hashes: dict[int, int] = {}
        self.energy: dict[int, float] = {}
        self.owner: dict[int, str] = {}

    def add(self, key: str, fp: Fingerprint) -> None:
        for i, (h, e) in enumerate(zip(fp.hashes, fp.energy)):
            self.hashes.setdefault(fp.start + i, int(h))
            self.energy.setdefault(fp.start + i, float(e))
            self.owner.setdefault(fp.start + i, key)

    def match(self, fp: Fingerprint) -> tuple[str, int, bool] | None:
        """(kept clip it copies, frame shift from the clip's video to this one, whether the whole
        clip lies on this timeline), or None. Offsets where at least half the clip lies on the
        timeline count (a trimmed copy's clips straddle the original's ends)."""
        if not self.energy:
            return None
        n = len(fp.energy)
        first = min(self.energy) - (n - 1)  # padded by a clip's length each side
        axis = np.full(max(self.energy) - first + n, np.nan)
        for frame, e in self.energy.items():
            axis[frame - first] = e
        windows = np.lib.stride_tricks.sliding_window_view(axis, n)  # (offsets, n)
        corr = masked_correlation(windows, fp.energy, min_valid=max(2, n // 2))
        for offset in np.argsort(-corr):
            if not corr[offset] >= MIN_ENERGY_CORRELATION:
                return None
            covered = np.flatnonzero(~np.isnan(windows[offset]))
            probes = covered[np.unique(np.linspace(0, len(covered) - 1, PROBE_FRAMES).round().astype(int))]
            frames = [int(first + offset + p) for p in probes]
            theirs = np.array([self.hashes[f] for f in frames], np.uint64)
            distance = np.mean([bin(int(x)).count("1") for x in theirs ^ fp.hashes[probes]])
            if distance <= MAX_HASH_DISTANCE:
                owners = [self.owner[f] for f in frames]
                owner = max(sorted(set(owners)), key=owners.count)  # the kept clip covering most of it
                return owner, int(first + offset - fp.start), len(covered) == n
        return None


def masked_correlation(windows: np.ndarray, x: np.ndarray, min_valid: int) -> np.ndarray:
    """Pearson correlation of x with each row of windows over the row's non-NaN entries;
    -1 for rows with fewer than min_valid of them or no variation."""
    valid = ~np.isnan(windows)
    count = valid.sum(1)
    w = np.where(valid, windows, 0.0)
    xs = np.where(valid, x[None], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        dw = np.where(valid, w - (w.sum(1) / count)[:, None], 0.0)
        dx = np.where(valid, xs - (xs.sum(1) / count)[:, None], 0.0)
        corr = (dw * dx).sum(1) / (np.linalg.norm(dw, axis=1) * np.linalg.norm(dx, axis=1))
    return np.where((count >= min_valid) & np.isfinite(corr), corr, -1.0)


def find_duplicates(clips: list[Record], load: Callable[[str], Clip] = load_clip) -> dict[str, str]:
    """{duplicate clip key: the kept clip key it copies}. Videos are visited in key order and each
    clip is compared with the kept clips of the videos before it, so the first copy is kept."""
    videos: dict[str, list[Record]] = defaultdict(list)
    for clip in sorted(clips, key=lambda c: c.key):
        videos[clip.meta["video_key"]].append(clip)
    found: dict[str, str] = {}
    first_by_hash: dict[str, str] = {}
    timelines: dict[str, Timeline] = {}
    for video in sorted(videos):
        members = videos[video]
        sha = members[0].meta.get("source_sha256")
        if sha and sha in first_by_hash:  # a byte-identical copy: same clips, no need to look
            original = {tuple(c.meta["frame_range"]): c.key for c in videos[first_by_hash[sha]]}
            fallback = videos[first_by_hash[sha]][0].key
            for clip in members:
                same = original.get(tuple(clip.meta["frame_range"]), fallback)
                found[clip.key] = found.get(same, same)  # the kept clip, should `same` copy another
            continue
        if sha:
            first_by_hash[sha] = video
        found.update(_near_duplicates(members, timelines, load))
        timelines[video] = Timeline()
        for clip in members:
            if clip.key not in found:
                timelines[video].add(clip.key, fingerprint(load(clip.meta["clip_path"]), clip.meta["frame_range"][0]))
    return found


def _near_duplicates(members: list[Record], timelines: dict[str, Timeline],
                     load: Callable[[str], Clip]) -> dict[str, str]:
    """One video's clips that copy earlier videos' kept clips. A clip wholly matched counts alone;
    a partly matched one (at a copy's trimmed ends) only where at least half of the video's clips
    match one earlier video at one shift: a whole-video copy. A lone partial match (speech fading
    to silence looks alike in any two videos) is not trusted."""
    matches: dict[str, tuple[str, str, int, bool]] = {}
    for clip in members:
        fp = fingerprint(load(clip.meta["clip_path"]), clip.meta["frame_range"][0])
        for other, timeline in timelines.items():
            hit = timeline.match(fp)
            if hit:
                matches[clip.key] = (other, *hit)
                break
    votes = Counter((other, shift) for other, _, shift, _ in matches.values())
    copied = {place for place, n in votes.items() if 2 * n >= len(members)}
    return {key: owner for key, (other, owner, shift, whole) in matches.items()
            if whole or (other, shift) in copied}


def reject_duplicates(clips: list[Record], load: Callable[[str], Clip] = load_clip) -> list[Record]:
    """The clips, duplicates rejected `duplicate_of:<key>` (pair-making then skips them)."""
    found = find_duplicates(clips, load)
    for clip in clips:
        if clip.key in found:
            clip.reject(f"duplicate_of:{found[clip.key]}", "duplicates")
    return clips


def held_out(clips: list[Record], found: dict[str, str], share: float, seed: int = 0) -> set[str]:
    """Keys of the clips in a held-out split of about `share` of the speakers. A duplicate goes
    with the clip it copies (whatever speaker its file was filed under), so no copy of a test clip
    is trained on; the draw depends on the seed and the speaker only."""
    speaker = {c.key: c.meta["speaker"] for c in clips}

    def root(key: str) -> str:
        while key in found and found[key] != key:
            key = found[key]
        return key

    def drawn(name: str) -> bool:
        digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
        return int.from_bytes(digest[:8], "little") / 2 ** 64 < share

    return {c.key for c in clips if drawn(speaker.get(root(c.key), c.meta["speaker"]))}
