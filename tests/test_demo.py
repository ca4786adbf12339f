"""The embedded demo input: a real face whose mouth moves with real speech."""

import av
import numpy as np

from factory.demo import SAMPLE_RATE, make_demo_videos, make_talking_video, mouth_openings
from factory.faces.landmarks import INNER_LIP_GAP, FaceLandmarker
from factory.media.audio import load_audio
from factory.media.video import iter_frames


def test_talking_video_mouth_follows_the_speech(tmp_path):
    path = make_talking_video(tmp_path / "t.mp4", "Open the window and look at the bright blue sky.",
                              seconds=3.0, size=256)
    with av.open(str(path)) as c:
        assert c.streams.audio[0].sample_rate == SAMPLE_RATE and c.streams.video
    frames = [f for _, f in iter_frames(path)]
    assert abs(len(frames) - 75) <= 1
    gaps = []
    with FaceLandmarker() as lm:
        for f in frames:
            pts = lm.detect(f)[0]
            gaps.append(np.linalg.norm(pts[INNER_LIP_GAP[1], :2] - pts[INNER_LIP_GAP[0], :2]))
    gaps = np.array(gaps)
    loudness = mouth_openings(load_audio(path), len(gaps), 25, 1.0)
    assert gaps.max() - gaps.min() > 3.0
    assert np.corrcoef(gaps, loudness)[0, 1] > 0.5


def test_demo_videos_are_reused_not_remade(tmp_path, monkeypatch):
    import factory.demo as demo

    calls = []
    monkeypatch.setattr(demo, "make_talking_video", lambda path, *a, **k: calls.append(path) or path.write_bytes(b"x"))
    first = make_demo_videos(tmp_path, count=2)
    second = make_demo_videos(tmp_path, count=2)
    assert first == second and len(calls) == 2 and len({p.name for p in first}) == 2
