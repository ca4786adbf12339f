"""Encode frame arrays to MP4 bytes (H.264, high quality) with PyAV."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace

# What mp4_bytes writes, and the tags that say so: BT.709 matrix, primaries and transfer, limited
# range. Readers that honour tags (and untagged-HD guesses) then decode the colours we encoded.
_AVCOL_BT709, _AVCOL_RANGE_MPEG = 1, 1


def mp4_bytes(frames: np.ndarray, fps: int = 25, crf: int = 18, pix_fmt: str = "yuv444p") -> bytes:
    """(T, H, W, 3) uint8 RGB -> H.264 MP4. yuv444p avoids chroma loss; yuv420p (even sizes only)
    is what hardware decoders (NVDEC, phones) take: the shards use it."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt
        stream.options = {"crf": str(crf), "preset": "medium"}
        tag_bt709(stream.codec_context)
        for rgb in frames:
            for packet in stream.encode(_bt709_yuv(rgb, pix_fmt)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def tag_bt709(codec_context) -> None:
    codec_context.colorspace = codec_context.color_primaries = codec_context.color_trc = _AVCOL_BT709
    codec_context.color_range = _AVCOL_RANGE_MPEG


def _bt709_yuv(rgb: np.ndarray, pix_fmt: str) -> av.VideoFrame:
    """RGB -> limited-range BT.709 YUV (swscale's own default would be BT.601)."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    yuv = frame.reformat(format=pix_fmt, src_colorspace=Colorspace.ITU709, dst_colorspace=Colorspace.ITU709,
                         src_color_range=ColorRange.JPEG, dst_color_range=ColorRange.MPEG)
    yuv.colorspace, yuv.color_range = _AVCOL_BT709, _AVCOL_RANGE_MPEG
    yuv.color_primaries = yuv.color_trc = _AVCOL_BT709
    return yuv


bt709_frame = _bt709_yuv  # public name for streaming writers (factory/dubbing/writer.py)


def read_mp4(data: bytes) -> np.ndarray:
    """RGB frames, converted with the file's own colour tags (see factory.media.video)."""
    from factory.media.video import frame_to_rgb

    with av.open(io.BytesIO(data)) as container:
        return np.stack([frame_to_rgb(f) for f in container.decode(video=0)])


def add_aac_stream(container: av.container.OutputContainer, sample_rate: int = 16000) -> av.audio.stream.AudioStream:
    stream = container.add_stream("aac", rate=sample_rate)
    stream.layout = "mono"
    return stream


def mux_audio(container, stream, samples: np.ndarray, sample_rate: int = 16000) -> None:
    """Encode int16 mono samples into `stream` and flush. Frames carry timestamps, so the muxer
    records the AAC encoder's priming in an edit list and readers see the sound in sync."""
    for start in range(0, len(samples), 1024):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[None, start:start + 1024], np.int16),
                                           format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = sample_rate, start, Fraction(1, sample_rate)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
