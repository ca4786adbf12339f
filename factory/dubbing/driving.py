"""Driving frames for mask-based generators that copy a mouth from "the alternative clip".

Transplant and the latent editor take their lips from another clip's frames (in the factory:
the same speaker saying other words). A user's new audio comes with no such clip, so one is
picked from the segment itself, Video-Rewrite style but in one dimension: each frame's loudness
in the new audio sets a target mouth opening between the segment's most closed and most open
mouths, and the frame whose opening is nearest (ties to the nearest in time) drives it. Silence
gives the most closed mouth. A training-free baseline: the lips open and close with the sound,
they do not shape its phonemes. Audio-driven generators (dit_inpainter) ignore these frames.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from factory.faces.landmarks import INNER_LIP_GAP

SILENCE_DB = -50.0  # dBFS (RMS per frame) at or below which the mouth is closed
DYNAMIC_RANGE_DB = 30.0  # the loud end: the segment's 95th percentile, at least this far above silence


def loudness_db(audio: np.ndarray, frames: int) -> np.ndarray:
    """(frames,) RMS level of each frame's share of `audio` (int16), dBFS."""
    chunks = np.asarray(audio, np.float32).reshape(frames, -1) / 32768.0
    return 10 * np.log10(np.mean(chunks**2, axis=1) + 1e-10)


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """(T,) inner-lip gap in crop pixels (the crops are aligned: one scale for all frames)."""
    gap = landmarks[:, INNER_LIP_GAP[1]] - landmarks[:, INNER_LIP_GAP[0]]
    return np.linalg.norm(gap, axis=1)


def driving_frames(landmarks: np.ndarray, audio: np.ndarray) -> np.ndarray:
    """(T,) indices into the segment: the frame whose mouth drives each frame."""
    n = len(landmarks)
    level = gaussian_filter1d(loudness_db(audio, n), 1.0) if n > 1 else loudness_db(audio, n)
    loud = max(float(np.percentile(level, 95)), SILENCE_DB + DYNAMIC_RANGE_DB)
    share = np.clip((level - SILENCE_DB) / (loud - SILENCE_DB), 0, 1)
    opening = mouth_opening(landmarks)
    lo, hi = np.percentile(opening, [5, 95])
    target = lo + share * (hi - lo)
    miss = np.abs(opening[None, :] - target[:, None])  # (frame, candidate)
    distance = np.abs(np.arange(n)[None, :] - np.arange(n)[:, None]) / max(n, 1)
    return np.argmin(miss + 1e-3 * (hi - lo + 1e-6) * distance, axis=1)
