"""The dubbed video as an MP4: H.264 frames streamed in as they are pasted, then the new audio.

Colours are encoded as the shards' are (BT.709, limited range, tagged: factory.media.encode).
yuv420p is what players and phones take; a frame with an odd side cannot be 4:2:0, so such a
video is written yuv444p instead. The audio is AAC mono at the new audio's own sample rate.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from factory.media.encode import add_aac_stream, bt709_frame, mux_audio, tag_bt709


class Mp4Writer:
    def __init__(self, path: str | Path, width: int, height: int, fps: Fraction, sample_rate: int,
                 crf: int = 18, preset: str = "medium"):
        self.container = av.open(str(path), mode="w", format="mp4")
        self.sample_rate = sample_rate
        self.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        self.video = self.container.add_stream("libx264", rate=fps)
        self.video.width, self.video.height, self.video.pix_fmt = width, height, self.pix_fmt
        self.video.options = {"crf": str(crf), "preset": preset}
        tag_bt709(self.video.codec_context)
        self.audio = add_aac_stream(self.container, sample_rate)  # every stream before the first packet
        self.frames = 0

    def add(self, rgb: np.ndarray) -> None:
        for packet in self.video.encode(bt709_frame(rgb, self.pix_fmt)):
            self.container.mux(packet)
        self.frames += 1

    def finish(self, audio: np.ndarray) -> None:
        """Flush the video, then encode `audio` (int16 mono) and close the file."""
        for packet in self.video.encode():
            self.container.mux(packet)
        mux_audio(self.container, self.audio, audio, self.sample_rate)
        self.container.close()

    def abort(self) -> None:
        self.container.close()
