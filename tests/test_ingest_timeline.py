"""Ingest on real talking-face files whose timeline is unusual: streams starting late, a broken
audio packet."""

import numpy as np

from factory.clip_store import ClipStore
from factory.clips import load_clip
from factory.records import Record
from factory.stages.ingest import IngestConfig, IngestStage
from tests.conftest import face_frames, SR
from tests.media import remux, write_video


def ingest(path, work, **cfg):
    stage = IngestStage(IngestConfig(**cfg), ClipStore.for_settings(work, {}))
    return stage([Record("v", "video", meta={"source": str(path), "speaker": "s"})])


def fates(records):
    return [(r.kind, r.meta.get("frame_range"), r.rejected) for r in records]


def test_both_streams_starting_at_1s_give_the_same_clips(talking_videos, tmp_path):
    original = talking_videos / "one.mp4"
    late = remux(original, tmp_path / "one_late.mkv", shift=1.0)
    at_zero = ingest(remux(original, tmp_path / "one.mkv"), tmp_path / "a")
    at_one = ingest(late, tmp_path / "b")
    assert any(r.kind == "clip" and not r.rejected for r in at_zero)
    assert fates(at_one) == fates(at_zero)
    for a, b in zip(at_zero, at_one):  # the same pictures with the same sound, not shifted copies
        if a.kind == "clip" and not a.rejected:
            clip_a, clip_b = load_clip(a.meta["clip_path"]), load_clip(b.meta["clip_path"])
            assert np.abs(clip_a.frames.astype(int) - clip_b.frames).mean() < 1.0
            assert np.abs(clip_a.audio.astype(int) - clip_b.audio).mean() < 50


def test_corrupt_audio_packet_rejects_only_the_clips_it_touches(speech, tmp_path):
    n = len(speech) * 25 // SR
    good = write_video(tmp_path / "good.mp4", face_frames(n), audio=speech)
    damaged = remux(good, tmp_path / "damaged.mp4", corrupt_audio_at=0.5)  # inside the first clip only
    out = ingest(damaged, tmp_path / "w", clip_frames=25, clip_stride=25)
    clips = [r for r in out if r.kind == "clip"]
    assert clips[0].meta["frame_range"] == [0, 25] and clips[0].rejected == "audio_decode_error"
    assert len(clips) >= 3 and all(c.rejected != "audio_decode_error" for c in clips[1:])
    assert any(not c.rejected for c in clips[1:])
