"""Audio: decode any container's first audio stream to 16 kHz mono, write WAV bytes.

Samples are placed by their timestamps on the video's timeline (sample 0 = the first video
frame), so late starts, gaps and overlaps do not shift the sound against the picture. A packet
that does not decode becomes silence and a recorded bad interval, not a rejected video.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from factory.media.video import MediaError, first_frame_time, open_container

# Timestamps within this many samples of where the previous chunk ended are rounding, not gaps:
# snapping keeps the sound continuous instead of inserting single zero samples (clicks).
_SNAP_SAMPLES = 32


@dataclass
class DecodedAudio:
    samples: np.ndarray  # int16 mono
    bad: list[tuple[int, int]] = field(default_factory=list)  # [start, end) samples that failed to decode

    def is_clean(self, start: int, end: int) -> bool:
        """No bad interval touches samples [start, end)."""
        return not any(b0 < end and b1 > start for b0, b1 in self.bad)


def load_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """Mono int16 samples at `sample_rate`, sample 0 at the first video frame's time (int16 keeps
    an hour of audio near 115 MB)."""
    return decode_audio(path, sample_rate).samples


def decode_audio(path: str | Path, sample_rate: int = 16000) -> DecodedAudio:
    """Like load_audio, with the intervals whose packets failed to decode (left silent)."""
    try:
        with open_container(path) as container:
            if not container.streams.audio:
                raise MediaError("no_audio_stream")
            zero = first_frame_time(path) if container.streams.video else 0.0
            timeline = _Timeline(sample_rate, zero)
            resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
            for packet in container.demux(container.streams.audio[0]):
                try:
                    frames = packet.decode()
                except av.FFmpegError:  # one broken packet costs its own interval only
                    timeline.mark_bad(packet)
                    continue
                for frame in frames:
                    for out in resampler.resample(frame):
                        timeline.place(out)
            for out in resampler.resample(None):
                timeline.place(out)
    except MediaError:
        raise
    except av.FFmpegError as exc:
        raise MediaError("audio_decode_error", str(exc)[:200]) from exc
    return timeline.assemble()


class _Timeline:
    """Collects resampled chunks at their timestamps, then lays them out in one array."""

    def __init__(self, sample_rate: int, zero: float):
        self.rate, self.zero = sample_rate, zero
        self.chunks: list[tuple[int, np.ndarray]] = []
        self.bad: list[tuple[int, int]] = []
        self.cursor = None  # where the previous chunk ended

    def _position(self, seconds: float) -> int:
        return int(round((seconds - self.zero) * self.rate))

    def place(self, frame: av.AudioFrame) -> None:
        samples = frame.to_ndarray().reshape(-1)
        pos = self.cursor if frame.time is None else self._position(frame.time)
        if pos is None:
            pos = 0
        if self.cursor is not None and abs(pos - self.cursor) <= _SNAP_SAMPLES:
            pos = self.cursor
        self.chunks.append((pos, samples))
        self.cursor = pos + len(samples)

    def mark_bad(self, packet: av.Packet) -> None:
        start = self.cursor or 0
        if packet.pts is not None and packet.time_base is not None:
            start = self._position(float(packet.pts * packet.time_base))
        length = int(round(float(packet.duration * packet.time_base) * self.rate)) if packet.duration else 1024
        self.bad.append((max(start, 0), max(start + length, 0)))

    def assemble(self) -> DecodedAudio:
        if not self.chunks:
            raise MediaError("no_audio_samples")
        end = max(pos + len(s) for pos, s in self.chunks)
        audio = np.zeros(max(end, 0), np.int16)  # gaps stay silent
        for pos, samples in self.chunks:  # sound before the picture (pos < 0) is cut off
            if pos < 0:
                samples, pos = samples[-pos:], 0
            audio[pos:pos + len(samples)] = samples
        bad = [(b0, b1) for b0, b1 in self.bad if b1 > b0]
        return DecodedAudio(audio, bad)


def wav_bytes(samples: np.ndarray, sample_rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()
