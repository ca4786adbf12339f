"""Pass 1 of `factory dub`: every frame of the video decoded, its face tracked, aligned and cropped.

Ingest's pieces, frame by frame instead of clip by clip: decode at the video's own rate
(factory.media.video), scene cuts and dark frames (CutDetector), MediaPipe landmarks (the largest
face; a background face under `background_face_share` of its size is ignored), a face jump or a
cut ends the track, and ClipAssembler's zero-phase landmark smoothing, alignment and antialiased
crop (one-frame clips). Crops go to a memory-mapped file in `workdir`, so a long video costs disk,
not memory; landmarks and transforms are small and stay in memory.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from factory.faces.continuity import landmark_jump
from factory.faces.landmarks import NUM_LANDMARKS, FaceLandmarker
from factory.media.cuts import CutDetector
from factory.media.video import iter_frames
from factory.stages.assemble import Background, ClipAssembler


@dataclass
class TrackSettings:
    crop_size: int | None = None  # None: the dubber's own (Dubber.crop_size)
    smoothing_sigma: float = 1.5  # frames (ingest.landmark_smoothing_sigma)
    scene_cut_threshold: float = 27.0
    min_luma: float = 12.0
    max_face_shift: float = 0.5
    max_face_scale: float = 1.25
    background_face_share: float = 0.6


@dataclass
class FaceTrack:
    fps: float  # the rate the frames were decoded at (the video's own)
    count: int  # frames decoded
    crops: np.ndarray  # (capacity, S, S, 3) uint8, memory-mapped; valid where track >= 0
    landmarks: np.ndarray  # (capacity, 478, 2) float32, crop pixels
    transforms: np.ndarray  # (capacity, 2, 3) float32, frame pixels -> crop pixels
    track: np.ndarray  # (capacity,) int: -1 no usable face; one number per unbroken face track
    issues: Counter  # frames not dubbed, by reason (no_face, dark_frame, beyond_duration)

    @property
    def faces(self) -> int:
        return int((self.track[:self.count] >= 0).sum())


def track_faces(path: str | Path, fps: float, capacity: int, settings: TrackSettings, workdir: Path,
                progress: bool = False) -> FaceTrack:
    s = settings.crop_size
    crops = np.lib.format.open_memmap(workdir / "crops.npy", mode="w+", dtype=np.uint8, shape=(capacity, s, s, 3))
    landmarks = np.zeros((capacity, NUM_LANDMARKS, 2), np.float32)
    transforms = np.zeros((capacity, 2, 3), np.float32)
    track = np.full(capacity, -1, np.int64)
    issues: Counter = Counter()

    def keep(k: int, arrays) -> bool:
        crops[k], landmarks[k], transforms[k] = arrays.crops[0], arrays.landmarks[0], arrays.transforms[0]
        return True

    assembler = ClipAssembler(s, 1, 1, settings.smoothing_sigma, keep)
    worker = Background(lambda k, rgb, pts: assembler.add(k, rgb, pts) if pts is not None
                        else assembler.break_track())
    cuts = CutDetector(settings.scene_cut_threshold, settings.min_luma, fps)
    landmarker = FaceLandmarker(static=False, max_faces=1, min_face_share=settings.background_face_share)
    count, current, previous, fresh = 0, -1, None, True
    bar = tqdm(desc="track", unit="frame", total=capacity, disable=not progress)
    try:
        for k, rgb, shot in iter_frames(path, fps, prepare=cuts.next_frame):
            count = k + 1
            bar.update(1)
            if k >= capacity:  # past the container's stated duration: kept as decoded
                issues["beyond_duration"] += 1
                continue
            if shot:  # a new shot: the smoothing must not reach across it
                landmarker.reset()
                worker.put(k, None, None)
                previous, fresh = None, True
                if shot == "dark_frame":
                    issues[shot] += 1
                    continue
            faces = landmarker.detect(rgb)
            if not faces:
                issues["no_face"] += 1
                worker.put(k, None, None)
                previous, fresh = None, True
                continue
            points = faces[0][:, :2]  # the largest face
            if previous is not None and landmark_jump(previous, points, settings.max_face_shift,
                                                      settings.max_face_scale):
                worker.put(k, None, None)  # another face, or a missed cut: a new track
                fresh = True
            if fresh:
                current, fresh = current + 1, False
            previous = points
            track[k] = current
            worker.put(k, rgb, points)
        worker.put(-1, None, None)  # the end: crop the frames held back for the look-ahead
    finally:
        bar.close()
        landmarker.close()
        worker.close()
    return FaceTrack(float(fps), count, crops, landmarks, transforms, track, issues)
