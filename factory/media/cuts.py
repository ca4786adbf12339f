"""Shot boundaries between consecutive decoded frames.

PySceneDetect's content detector (the one LatentSync uses) scores each frame by its change in
hue, saturation *and luminance* from the previous one (0-255 scale; its default cut is 27), so a
hard cut between two shots of one dimly lit, colour-graded set is seen even where colour
histograms barely move. Frames darker than `min_luma` (a fade to or from black) end a shot too:
a face fading in or out is no training material. Frames are scored small: a cut is a change
of the whole picture, not of its detail.
"""

from __future__ import annotations

import numpy as np
from scenedetect.common import FrameTimecode
from scenedetect.detectors import ContentDetector

SMALL_ROWS = 96  # rows of the frame the detector sees


def small_frame(rgb: np.ndarray) -> np.ndarray:
    """A strided, BGR view of the frame (~96 rows): cheap on the decode thread (no resize)."""
    step = max(1, rgb.shape[0] // SMALL_ROWS)
    return np.ascontiguousarray(rgb[::step, ::step, ::-1])


class CutDetector:
    def __init__(self, threshold: float = 27.0, min_luma: float = 12.0, fps: float = 25.0):
        self.threshold, self.min_luma, self.fps = threshold, min_luma, float(fps)
        self.reset()

    def reset(self) -> None:
        self.detector = ContentDetector(threshold=self.threshold, min_scene_len=1)
        self.index = 0

    def next_frame(self, rgb: np.ndarray) -> str | None:
        """`check` for the next frame of the sequence (RGB, any size): used on the decode thread,
        so shot boundaries cost the tracking thread nothing."""
        verdict = self.check(self.index, small_frame(rgb))
        self.index += 1
        return verdict

    def check(self, index: int, small_bgr: np.ndarray) -> str | None:
        """"scene_cut" when frame `index` starts a new shot, "dark_frame" when it is too dark to
        use, else None. Frames must come in order, each once."""
        if float(small_bgr.mean()) < self.min_luma:
            return "dark_frame"
        cuts = self.detector.process_frame(FrameTimecode(index, self.fps), small_bgr)
        return "scene_cut" if cuts and cuts[-1].frame_num == index else None
