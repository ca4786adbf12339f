"""Shared helpers for the benchmarks: a long 720p talking-face video made offline."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import cv2
import numpy as np
import soundfile as sf
from scipy.signal import resample_poly
from skimage import data

from factory.files import atomic_path
from factory.media.encode import add_aac_stream, mux_audio


def speech(seconds: float, tmp: Path) -> np.ndarray:
    text = ("The factory turns talking head video into pairs for training. " * 4).strip()
    wav_path = tmp / "bench_speech.wav"
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(wav_path), text], check=True)
    wav, rate = sf.read(str(wav_path), dtype="float32")
    wav = resample_poly(wav, 16000, rate)
    reps = int(np.ceil(seconds * 16000 / len(wav)))
    return (np.tile(wav, reps)[: int(seconds * 16000)] * 32767).astype(np.int16)


def long_720p_video(path: Path, seconds: float) -> Path:
    """A 1280x720 25 fps H.264 + AAC file: the astronaut's face swaying on a textured background."""
    if path.exists():
        return path
    face = cv2.resize(data.astronaut()[:, 64:448], (420, 560))
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8), (0, 0), 6)
    audio = speech(seconds, path.parent)
    with atomic_path(path, suffix=".tmp.mp4") as tmp, av.open(str(tmp), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 1280, 720, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "23"}
        aus = add_aac_stream(out)
        for i in range(int(seconds * 25)):
            frame = background.copy()
            x, y = 360 + int(20 * np.sin(i / 30)), 80 + int(10 * np.cos(i / 23))
            frame[y:y + 560, x:x + 420] = face
            for p in vs.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        mux_audio(out, aus, audio)
    return path
