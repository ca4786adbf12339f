"""Sync-C / Sync-D and the audio-video offset, by syncnet_python's formula, for any SyncNet.

For every video window (one per start frame) and every offset k in [-max_offset, max_offset] the
distance between the window's video feature and the audio feature k frames later; per offset the
mean over windows. Sync-D = the smallest mean distance, Sync-C (confidence) = median over offsets
minus that minimum, offset = -argmin shift (syncnet_python's `vshift - minidx`).

Sign: a positive offset means the audio runs *ahead* of the picture: the sound of frame i sits at
audio frame i - offset. `shift_audio(audio, offset)` moves it back into place. (A recording whose
audio lags the lips by d frames gives offset = -d.)

Unlike syncnet_python, shifts past the clip's ends are left out of the means instead of compared
with zero-padded features: on 3-second clips the padding would weigh on the large offsets.
The model is passed in (factory.models: SyncNet or SyncNetS), nothing is loaded here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SyncScores:
    offset: int  # frames; positive: audio ahead of the picture (syncnet_python's sign)
    confidence: float  # Sync-C: median - min of the mean distance over offsets
    min_dist: float  # Sync-D
    dists: tuple[float, ...] = ()  # mean distance per offset, -max_offset .. max_offset


def offset_distances(video_feat, audio_feat, max_offset: int) -> np.ndarray:
    """(2*max_offset+1,) mean L2 distance between video window i and audio window i + k, per shift k
    (-max_offset..max_offset), over the windows where i + k exists."""
    import torch

    v, a = torch.as_tensor(video_feat, dtype=torch.float32), torch.as_tensor(audio_feat, dtype=torch.float32)
    n = min(len(v), len(a))
    out = np.full(2 * max_offset + 1, np.nan)
    for j, k in enumerate(range(-max_offset, max_offset + 1)):
        lo, hi = max(0, -k), min(n, n - k)
        if hi > lo:
            out[j] = torch.linalg.vector_norm(v[lo:hi] - a[lo + k:hi + k], dim=1).mean().item()
    return out


def sync_scores(model, frames: np.ndarray, audio: np.ndarray, sample_rate: int = 16000, fps: int = 25,
                max_offset: int = 15) -> SyncScores:
    """Offset, confidence and min distance of aligned face frames (T, S, S, 3) uint8 against mono
    audio (int16, or float in [-1, 1]) starting at the first frame, fps frames a second."""
    model_fps = getattr(getattr(model, "config", None), "fps", 25)
    if fps != model_fps:
        raise ValueError(f"sync_scores: frames at {fps} fps, the SyncNet expects {model_fps}")
    frames = np.asarray(frames)
    count = len(frames) - model.window + 1
    if count < 1:
        raise ValueError(f"sync_scores needs at least {model.window} frames, got {len(frames)}")
    was_training = model.training
    model.eval()
    try:
        video = model.video_features(frames)
        sound = model.audio_features(np.asarray(audio), sample_rate, count)
    finally:
        model.train(was_training)
    max_offset = min(max_offset, count - 1)
    dists = offset_distances(video, sound, max_offset)
    best = int(np.nanargmin(dists))
    low = float(dists[best])
    return SyncScores(offset=-(best - max_offset), confidence=float(np.nanmedian(dists)) - low, min_dist=low,
                      dists=tuple(round(float(d), 4) for d in dists))


def shift_audio(audio: np.ndarray, offset: int, samples_per_frame: int) -> np.ndarray:
    """Audio moved `offset` frames later (earlier if negative), zero-filled, same length:
    undoes an offset measured by sync_scores."""
    audio = np.asarray(audio)
    s = int(offset) * samples_per_frame
    out = np.zeros_like(audio)
    if s >= 0:
        out[s:] = audio[:len(audio) - s] if s < len(audio) else audio[:0]
    else:
        out[:s] = audio[-s:]
    return out
