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
