"""Audio: decode any container's first audio stream to 16 kHz mono, write WAV bytes."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from factory.media.video import MediaError


def load_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """Mono int16 samples at `sample_rate`, sample 0 at the first video frame's time (int16 keeps
    an hour of audio near 115 MB)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError("no_audio_stream")
            stream = container.streams.audio[0]
            video_start = _start_seconds(container.streams.video[0]) if container.streams.video else 0.0
            resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
            chunks, lead = [], None
            for frame in container.decode(stream):
                if lead is None and frame.time is not None:
                    lead = _offset(frame.time - video_start, sample_rate)
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except MediaError:
        raise
    except av.FFmpegError as exc:
        raise MediaError("audio_decode_error", str(exc)[:200]) from exc
    if not chunks:
        raise MediaError("no_audio_samples")
    audio = np.concatenate(chunks).astype(np.int16)
    if lead and lead > 0:  # sound starts after the picture: pad with silence
        audio = np.concatenate([np.zeros(lead, np.int16), audio])
    elif lead and lead < 0:  # sound starts before the picture: drop what precedes it
        audio = audio[-lead:]
    return audio


def _start_seconds(stream) -> float:
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def _offset(seconds: float, sample_rate: int) -> int:
    return int(round(seconds * sample_rate))


def wav_bytes(samples: np.ndarray, sample_rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()
