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


def write_av_probe(path: Path, video_start: float = 0.0, audio_start: float | None = None,
                   audio_gap: tuple[float, float] | None = None, event: float = 2.0, seconds: float = 4.0,
                   options: dict | None = None, corrupt_audio_at: float | None = None,
                   sample_rate: int = 16000) -> Path:
    """A flash (white frames) and a beep, both at `event` seconds of the file's timeline, with
    stream timestamps set directly: the video's first frame at `video_start`, the audio's first
    sample at `audio_start` (default: the same); each stream lasts `seconds`. `audio_gap` =
    (from, to) in timeline seconds: audio packets there are never written. `corrupt_audio_at`
    replaces the AAC packet at that time with garbage. The container follows the extension (mp4,
    ts, mkv); `options` go to the muxer."""
    audio_start = video_start if audio_start is None else audio_start
    n = int(seconds * 25)
    video_times = video_start + np.arange(n) / 25
    frames = np.full((n, 64, 64, 3), 40, np.uint8)
    frames[(video_times >= event - 1e-6) & (video_times < event + 0.2)] = 255
    audio_times = audio_start + np.arange(int(seconds * sample_rate)) / sample_rate
    beep = (audio_times >= event - 1e-6) & (audio_times < event + 0.2)
    audio = np.where(beep, 20000 * np.sin(2 * np.pi * 440 * audio_times), 0).astype(np.int16)
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options=options or {}) as out:
        vs = out.add_stream("libx264", rate=25)
        vs.height, vs.width, vs.pix_fmt = 64, 64, "yuv420p"
        vs.codec_context.time_base = Fraction(1, 25)
        as_ = add_aac_stream(out, sample_rate)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i + int(round(video_start * 25)), Fraction(1, 25)
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        packets = []
        for start in range(0, len(audio), 1024):
            if audio_gap and audio_gap[0] <= audio_times[start] < audio_gap[1]:
                continue
            frame = av.AudioFrame.from_ndarray(audio[None, start:start + 1024].copy(), format="s16", layout="mono")
            frame.sample_rate, frame.time_base = sample_rate, Fraction(1, sample_rate)
            frame.pts = start + int(round(audio_start * sample_rate))
            packets += as_.encode(frame)
        packets += as_.encode()
        for p in packets:
            if corrupt_audio_at is not None and p.pts is not None and \
                    abs(float(p.pts * p.time_base) - corrupt_audio_at) < 512 / sample_rate:
                garbage = av.Packet(rng.integers(0, 256, p.size, dtype=np.uint8).tobytes())
                garbage.pts, garbage.dts, garbage.duration, garbage.time_base = p.pts, p.dts, p.duration, p.time_base
                garbage.stream = p.stream
                p = garbage
            out.mux(p)
    return path


def flash_frame(frames) -> int:
    """Index of the first bright frame among (index, rgb) pairs."""
    return next(k for k, rgb in frames if rgb.mean() > 128)


def beep_frame(audio: np.ndarray, sample_rate: int = 16000, fps: int = 25) -> int:
    """Index of the 25 fps frame in which the beep starts."""
    return int(np.argmax(np.abs(audio.astype(int)) > 5000)) * fps // sample_rate


def remux(src: Path, dst: Path, shift: float = 0.0, corrupt_audio_at: float | None = None) -> Path:
    """Copy `src`'s video and audio packets into `dst` (container from its extension) without
    re-encoding: every packet `shift` seconds later, and the audio packet at `corrupt_audio_at`
    seconds (if any) overwritten with random bytes, as a damaged file would hold."""
    rng = np.random.default_rng(0)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams if s.type in ("video", "audio")}
        for packet in inp.demux():
            if packet.dts is None or packet.stream.index not in streams:
                continue
            if corrupt_audio_at is not None and packet.stream.type == "audio" and packet.pts is not None and \
                    0 <= corrupt_audio_at - float(packet.pts * packet.time_base) < float(packet.duration * packet.time_base):
                packet.update(rng.integers(0, 256, packet.size, dtype=np.uint8).tobytes())
            offset = int(round(shift / packet.time_base))
            packet.pts, packet.dts = packet.pts + offset, packet.dts + offset
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return dst
