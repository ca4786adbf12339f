"""Re-track landmarks on the pair's output crops, both sides with one detector.

The shards' `real_landmarks.npy` / `syn_landmarks.npy` and the mouth-distance filter use these,
so what they mean does not depend on which filters ran (ingest's own landmarks, tracked on the
source video, travel separately as `clip_landmarks`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from factory.faces.landmarks import NUM_LANDMARKS, FaceLandmarker
from factory.payload import PairMedia
from factory.records import Record
from factory.stage import Resources, Stage


@dataclass
class TrackConfig:
    resources: Resources = field(default_factory=lambda: Resources(pool_size=2))


def track(frames: np.ndarray) -> np.ndarray:
    """(T, 478, 2) landmarks on a clip of crops; NaN where no face is found."""
    out = np.full((len(frames), NUM_LANDMARKS, 2), np.nan, np.float32)
    with FaceLandmarker(static=False, max_faces=1) as lm:
        for t, frame in enumerate(frames):
            faces = lm.detect(frame)
            if faces:
                out[t] = faces[0][:, :2]
    return out


def clean_landmarks(tracked: np.ndarray, fallback: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(landmarks without NaN, per-frame validity): frames where the detector lost the face are
    linearly interpolated between the nearest tracked frames (held at the ends); a clip tracked
    nowhere takes `fallback` (ingest's landmarks). Trainers get usable points on every frame and
    the flag says which were seen. The filters keep the NaN version: a lost frame is no evidence."""
    valid = ~np.isnan(tracked).any(axis=(1, 2))
    if not valid.any():
        return np.asarray(fallback, np.float32).copy(), valid
    t, seen = np.arange(len(tracked)), np.flatnonzero(valid)
    flat = tracked.reshape(len(tracked), -1)
    out = np.stack([np.interp(t, seen, flat[seen, j]) for j in range(flat.shape[1])], axis=1)
    return out.reshape(tracked.shape).astype(np.float32), valid


class TrackStage(Stage):
    name = "track"
    requires = ("real_frames", "syn_frames")
    provides = ("real_tracked", "syn_tracked")

    def __init__(self, cfg: TrackConfig | None = None):
        super().__init__((cfg or TrackConfig()).resources)

    def process(self, records: list[Record]) -> list[Record]:
        for record in records:
            media: PairMedia = record.media
            media.real_tracked, media.syn_tracked = track(media.real_frames), track(media.syn_frames)
        return records
