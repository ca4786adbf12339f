"""Ingest on real encoded media: good input becomes aligned clips, every bad kind a reason."""

import cv2
import numpy as np
import pytest

from factory.clips import load_clip
from factory.stages.ingest import IngestConfig
from factory.faces.align import template
from factory.faces.landmarks import RIGID
from factory.clip_store import ClipStore
from factory.records import Record
from factory.stages.ingest import IngestStage
from tests.conftest import SR, face_frames
from tests.media import set_mp4_rotation, write_video


def ingest(path, tmp_path, **overrides):
    cfg = IngestConfig(clip_frames=25, clip_stride=25, **overrides)
    stage = IngestStage(cfg, ClipStore.for_settings(tmp_path / "clips", {"test": 1}))
    return stage([Record("v", "video", meta={"source": str(path), "speaker": "spk"})])


def reasons(records):
    return {r.rejected for r in records}


def test_good_video_becomes_aligned_clips(still_talker, tmp_path):
    clips = ingest(still_talker, tmp_path)
    kept = [c for c in clips if not c.rejected]
    assert len(kept) >= 4
    first = kept[0]
    assert first.key == "v_c0000" and first.meta["frame_range"] == [0, 25]
    assert first.meta["speaker"] == "spk" and len(first.meta["source_sha256"]) == 64
    clip = load_clip(first.meta["clip_path"])
    assert clip.frames.shape == (25, 256, 256, 3) and clip.landmarks.shape == (25, 478, 2)
    assert clip.audio.shape == (25 * SR // 25,) and clip.audio.dtype == np.int16
    # aligned: the rigid points sit on the template (within a few pixels: smoothing, detector noise)
    err = np.abs(clip.landmarks[:, RIGID] - template(256)[RIGID]).mean()
    assert err < 4.0
    starts = [c.meta["frame_range"][0] for c in kept]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)


def test_resumed_ingest_reuses_its_clips(still_talker, tmp_path):
    first = ingest(still_talker, tmp_path)
    again = ingest(still_talker, tmp_path)
    assert [r.key for r in first] == [r.key for r in again]


def test_crop_size_is_configurable(still_talker, tmp_path):
    kept = [c for c in ingest(still_talker, tmp_path, crop_size=128, max_clips_per_video=1) if not c.rejected]
    assert load_clip(kept[0].meta["clip_path"]).frames.shape[1:] == (128, 128, 3)
    assert len(kept) == 1


@pytest.fixture
def bad(tmp_path, speech):
    """Builds each kind of bad input on demand."""
    n = len(speech) * 25 // SR

    def make(kind):
        p = tmp_path / f"{kind}.mp4"
        if kind == "zero_bytes":
            p.write_bytes(b"")
        elif kind == "garbage":
            p.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
        elif kind == "truncated":
            good = write_video(tmp_path / "full.mp4", face_frames(n), audio=speech)
            p.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        elif kind == "audio_only":
            write_video(p, None, audio=speech)
        elif kind == "video_only":
            write_video(p, face_frames(n))
        elif kind == "silent":
            write_video(p, face_frames(n), audio=np.zeros_like(speech))
        elif kind == "no_face":
            noise = np.random.default_rng(1).integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
            write_video(p, noise, audio=speech)
        elif kind == "two_faces":
            write_video(p, face_frames(n, faces=2), audio=speech)
        elif kind == "tiny":
            write_video(p, face_frames(n, size=16), audio=speech)
        elif kind == "too_short":
            write_video(p, face_frames(12), audio=speech[: SR // 2])
        return p

    return make


@pytest.mark.parametrize("kind, reason", [
    ("zero_bytes", "empty_file"),
    ("garbage", "unreadable_container"),
    ("truncated", "unreadable_container"),
    ("audio_only", "no_video_stream"),
    ("video_only", "no_audio_stream"),
    ("silent", "silent_audio"),
    ("no_face", "no_face"),
    ("two_faces", "multiple_faces"),
    ("tiny", "resolution_too_small"),
    ("too_short", "too_short"),
])
def test_bad_input_is_a_recorded_reason(bad, tmp_path, kind, reason):
    out = ingest(bad(kind), tmp_path)
    assert len(out) == 1 and out[0].kind == "video"
    assert out[0].rejected == reason


def test_missing_file_is_a_reason(tmp_path):
    assert reasons(ingest(tmp_path / "nope.mp4", tmp_path)) == {"missing_file"}


def test_rotation_metadata_is_applied(tmp_path, speech):
    n = len(speech) * 25 // SR
    upright = face_frames(n)
    stored = np.ascontiguousarray(np.rot90(upright, k=-1, axes=(1, 2)))  # portrait phone video
    path = write_video(tmp_path / "rotated.mp4", stored, audio=speech)
    set_mp4_rotation(path, 90)
    from factory.media.video import iter_frames

    _, first = next(iter(iter_frames(path)))
    assert np.abs(first.astype(int) - upright[0]).mean() < 12  # displayed upright
    kept = [c for c in ingest(path, tmp_path) if not c.rejected]
    assert len(kept) >= 4


def test_variable_frame_rate_is_resampled_to_25fps(tmp_path, speech):
    seconds = len(speech) / SR
    rng = np.random.default_rng(2)
    times = np.cumsum(rng.uniform(1 / 40, 1 / 20, 400))
    times = times[times < seconds] - times[0]
    path = write_video(tmp_path / "vfr.mp4", face_frames(len(times)), audio=speech, times=list(times))
    from factory.media.video import iter_frames, probe

    assert probe(path).variable_frame_rate
    n = sum(1 for _ in iter_frames(path, 25))
    assert abs(n - times[-1] * 25) <= 2
    assert len([c for c in ingest(path, tmp_path) if not c.rejected]) >= 4


def test_odd_file_name_with_spaces_and_unicode(tmp_path, still_talker):
    path = tmp_path / ("a long name with spaces — ünïcødé 日本語 " * 3 + ".mp4")
    path.write_bytes(still_talker.read_bytes())
    assert len([c for c in ingest(path, tmp_path) if not c.rejected]) >= 4


def test_clips_never_straddle_a_scene_cut(tmp_path, speech):
    n = len(speech) * 25 // SR
    frames = face_frames(n)
    cut = 40
    frames[cut:] = 255 - frames[cut:, :, ::-1]  # a different shot: inverted colours, mirrored
    path = write_video(tmp_path / "cut.mp4", frames, audio=speech)
    stage = IngestStage(IngestConfig(clip_frames=25, clip_stride=25), ClipStore.for_settings(tmp_path / "clips", {}))
    stage.setup()
    issues = stage._track(str(path), lambda start, arrays: True)
    assert issues["scene_cut"] == 1
    kept = [c for c in ingest(path, tmp_path / "x") if not c.rejected]
    assert kept and all(not (c.meta["frame_range"][0] < cut < c.meta["frame_range"][1]) for c in kept)


def speaker_with_background_face(n: int, scale: float) -> np.ndarray:
    """A real face, and a mirrored copy of it `scale` times smaller behind, in the corner."""
    from skimage import data

    tight = data.astronaut()[:, 64:448]
    small = cv2.resize(np.ascontiguousarray(tight[:, ::-1]), None, fx=scale, fy=scale)
    canvas = np.full((512, 768, 3), 90, np.uint8)
    canvas[:, :384] = tight
    canvas[512 - small.shape[0]:, 384:384 + small.shape[1]] = small
    return np.repeat(canvas[None], n, 0)


def test_a_small_background_face_does_not_discard_frames(tmp_path, speech):
    from factory.faces.landmarks import FaceLandmarker

    frames = speaker_with_background_face(len(speech) * 25 // SR, 0.6)  # detected at ~52% of the main face
    with FaceLandmarker(static=True, min_face_share=0.0) as everyone:
        assert len(everyone.detect(frames[0])) == 2  # both faces are real detections
    path = write_video(tmp_path / "background.mp4", frames, audio=speech)
    kept = [c for c in ingest(path, tmp_path / "a") if not c.rejected]
    assert len(kept) >= 4  # the speaker's clips, the face behind ignored
    counted = ingest(path, tmp_path / "b", background_face_share=0.0)  # every face counts: the old rule
    assert {c.rejected for c in counted} == {"multiple_faces"}


def test_a_clip_continuing_the_last_one_reuses_its_boundary_embedding(still_talker, tmp_path):
    """Back-to-back clips of one track: the frame after clip i's last is clip i+1's first, so one
    dlib embedding serves both; the identity check still sees first and last of every clip."""
    cfg = IngestConfig(clip_frames=25, clip_stride=25, max_clips_per_video=3)
    stage = IngestStage(cfg, ClipStore.for_settings(tmp_path / "clips", {}))
    stage.ensure_set_up()
    submitted = []
    real_submit = stage.identity.submit
    stage.identity.submit = lambda crops: submitted.append(len(crops)) or real_submit(crops)
    kept = [c for c in stage([Record("v", "video", meta={"source": str(still_talker), "speaker": "s"})])
            if not c.rejected]
    assert [c.meta["frame_range"] for c in kept] == [[0, 25], [25, 50], [50, 75]]
    assert sum(submitted) == 4  # not 6: clips 2 and 3 start on their predecessor's last face
    assert all(c.meta["identity_csim"] > 0.95 and len(c.meta["identity"]) == 128 for c in kept)
    overlapping = IngestStage(IngestConfig(clip_frames=25, clip_stride=20, max_clips_per_video=2),
                              ClipStore.for_settings(tmp_path / "overlap", {}))
    overlapping.ensure_set_up()
    submitted.clear()
    real_submit = overlapping.identity.submit
    overlapping.identity.submit = lambda crops: submitted.append(len(crops)) or real_submit(crops)
    overlapping([Record("v", "video", meta={"source": str(still_talker), "speaker": "s"})])
    assert sum(submitted) == 4  # overlapping clips share no boundary frame: nothing reused
