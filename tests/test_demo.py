"""The embedded demo input: a real face whose mouth moves with real speech."""

import av
import numpy as np
import pytest

import factory.demo as demo
from factory.demo import SAMPLE_RATE, make_demo_videos, make_talking_video
from factory.faces.landmarks import INNER_LIP_GAP, FaceLandmarker
from factory.media.audio import load_audio


def rms_envelope(audio: np.ndarray, frames: int, fps: int = 25) -> np.ndarray:
    """Plain RMS of the audio in each video frame's window (independent of the module's own)."""
    hop = SAMPLE_RATE // fps
    windows = np.pad(audio.astype(np.float32), (0, frames * hop))[: frames * hop].reshape(frames, hop)
    return np.sqrt((windows ** 2).mean(axis=1))


def test_talking_video_mouth_follows_the_speech(tmp_path):
    path = make_talking_video(tmp_path / "t.mp4", "Open the window and look at the bright blue sky.",
                              seconds=3.0, size=384)
    with av.open(str(path)) as c:
        assert c.streams.audio and c.streams.audio[0].sample_rate == SAMPLE_RATE
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert abs(len(frames) - 75) <= 1 and frames[0].shape == (384, 384, 3)
    assert not np.array_equal(frames[0], frames[1])  # sway and sensor noise

    gaps = []
    with FaceLandmarker() as lm:
        for f in frames:
            pts = lm.detect(f)[0]
            gaps.append(np.linalg.norm(pts[INNER_LIP_GAP[1], :2] - pts[INNER_LIP_GAP[0], :2]))
    gaps = np.array(gaps)
    envelope = rms_envelope(load_audio(path), len(gaps))
    assert gaps.max() - gaps.min() > 3.0
    assert np.corrcoef(gaps, envelope)[0, 1] > 0.5
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary file was renamed into place


def test_demo_videos_are_reused_not_remade(tmp_path, monkeypatch):
    calls = []

    def fake(path, text, **kw):
        calls.append((path.name, text, kw["seed"]))
        path.write_bytes(b"x")
        return path

    monkeypatch.setattr(demo, "make_talking_video", fake)
    first = make_demo_videos(tmp_path, count=2, seed=5)
    second = make_demo_videos(tmp_path, count=2, seed=5)
    assert first == second == [tmp_path / "demo_speaker_00.mp4", tmp_path / "demo_speaker_01.mp4"]
    assert len(calls) == 2  # the second call made nothing
    assert calls[0][1] != calls[1][1] and calls[0][2] != calls[1][2]  # different sentences and sway


def test_missing_espeak_says_how_to_install(monkeypatch):
    monkeypatch.setattr(demo.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install espeak-ng"):
        demo.speak("hello")
