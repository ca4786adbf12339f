"""Media I/O on real encoded files: A/V sync, 25 fps resampling, encode round trips."""

import io

import numpy as np
import soundfile as sf

from factory.media.audio import load_audio, wav_bytes
from factory.media.encode import mp4_bytes, read_mp4
from factory.media.video import iter_frames
from tests.media import write_video


def test_audio_is_in_sync_with_the_first_frame(tmp_path):
    audio = np.zeros(32000, np.int16)
    t = np.arange(800) / 16000
    audio[16000:16800] = (20000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)  # a beep at 1.0 s
    frames = np.zeros((50, 32, 32, 3), np.uint8)
    path = write_video(tmp_path / "beep.mp4", frames, audio=audio)
    decoded = load_audio(path)
    onset = int(np.argmax(np.abs(decoded.astype(int)) > 5000))
    assert abs(onset - 16000) < 160  # within 10 ms: AAC priming is trimmed, not left as a delay


def test_30fps_source_becomes_25fps(tmp_path):
    frames = np.stack([np.full((16, 16, 3), i % 256, np.uint8) for i in range(60)])  # 2 s at 30 fps
    path = write_video(tmp_path / "30.mp4", frames, fps=30)
    out = [(k, int(f.mean())) for k, f in iter_frames(path, 25)]
    assert [k for k, _ in out] == list(range(50))
    # frame k shows the source frame nearest k/25 s (within codec noise)
    for k, value in out[::7]:
        assert abs(value - round(k * 30 / 25)) <= 2


def test_mp4_and_wav_round_trip():
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 255, (1, 64, 64, 3), dtype=np.uint8), 5, axis=0)
    frames = np.ascontiguousarray(frames)
    back = read_mp4(mp4_bytes(frames, crf=0))
    assert back.shape == frames.shape and np.abs(back.astype(int) - frames).mean() < 2.0
    samples = (rng.normal(0, 3000, 1600)).astype(np.int16)
    decoded, rate = sf.read(io.BytesIO(wav_bytes(samples)), dtype="int16")
    assert rate == 16000 and np.array_equal(decoded, samples)
