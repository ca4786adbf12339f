"""Builders for test media: real encoded files (PyAV), including deliberately bad ones."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from factory.media.encode import add_aac_stream, mux_audio


def write_video(path: Path, frames: np.ndarray | None, fps: float = 25, audio: np.ndarray | None = None,
                sample_rate: int = 16000, times: list[float] | None = None) -> Path:
    """Encode RGB frames (and int16 mono audio) to MP4. `times` (seconds) makes a variable rate."""
    with av.open(str(path), "w") as out:
        vs = None
        if frames is not None:
            vs = out.add_stream("libx264", rate=int(fps))
            vs.height, vs.width = frames.shape[1:3]
            vs.pix_fmt = "yuv420p"
            if times is not None:
                vs.codec_context.time_base = vs.time_base = Fraction(1, 1000)
        as_ = add_aac_stream(out, sample_rate) if audio is not None else None
        if vs is not None:
            for i, rgb in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                if times is not None:
                    frame.pts = int(round(times[i] * 1000))
                for p in vs.encode(frame):
                    out.mux(p)
            for p in vs.encode():
                out.mux(p)
        if as_ is not None:
            mux_audio(out, as_, audio, sample_rate)
    return path


def set_mp4_rotation(path: Path, degrees: int) -> None:
    """Write a display matrix into the first track's tkhd box, as phones do for portrait video.

    `degrees` follows FFmpeg's `frame.rotation`: the counter-clockwise turn that displays the
    stored picture upright.
    """
    data = bytearray(path.read_bytes())
    pos = data.find(b"tkhd")
    assert pos > 0 and data[pos + 4] == 0, "expected a version-0 tkhd box"
    rad = np.deg2rad(-degrees)
    a, b = int(round(np.cos(rad))) << 16, int(round(np.sin(rad))) << 16
    matrix = [a, b, 0, -b, a, 0, 0, 0, 1 << 30]
    data[pos + 44: pos + 80] = struct.pack(">9i", *matrix)
    path.write_bytes(bytes(data))
