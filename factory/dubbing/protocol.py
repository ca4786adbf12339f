"""What a dubber is to `factory dub`: one segment of aligned face crops in, a render and an alpha out.

The alpha says where the render replaces the input: the pipeline composites with it and pastes
back through it, so a dubber that only touches the lower face leaves the rest of the frame bit
for bit. The registry that picks a dubber for a checkpoint folder is dubbers.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class DubbedSegment:
    frames: np.ndarray  # (T, S, S, 3) uint8, the segment's crops with new lips (the render)
    alpha: np.ndarray  # (T, S, S) uint8: factory dub composites the render over the input crop with it
    #                    (255 = the render, 0 = the input crop, and so the video frame, kept exactly)


class Dubber(Protocol):
    name: str
    crop_size: int  # side of the aligned crops it takes (--crop-size overrides it)
    motion_frames: int  # dubbed crops of the previous segment it wants as motion (0: none)
    fps: int  # the timeline it works on (frames per second; audio per frame = sample_rate / fps)
    sample_rate: int

    def setup(self, device: str) -> None:
        """Load models onto `device` ("cuda" when present, else "cpu")."""

    def dub_segment(self, frames: np.ndarray, landmarks: np.ndarray, audio_16k: np.ndarray,
                    motion: np.ndarray | None, seed: int = 0) -> DubbedSegment:
        """frames (T, S, S, 3) uint8 aligned crops, landmarks (T, 478, 2) crop pixels, audio_16k
        int16 mono, T * sample_rate / fps samples (frame i sounds at [i, i + 1) frames), motion
        (M, S, S, 3) the dubbed crops just before the segment on the same face track, or None."""
