"""Frames of a video that no clip used get a row in samples.parquet saying why, and each rejected
row says the numbers behind its reason (`detail`)."""

import numpy as np

from factory.clip_store import ClipStore
from factory.records import Record
from factory.stages.ingest import FrameUse, IngestConfig, IngestStage
from manifests.ledger import ledger_entry
from manifests.table import read_table, write_table
from tests.conftest import SR, face_frames
from tests.media import write_video

FACELESS = 12  # noise frames before the face appears


def ingest(path, tmp_path, **overrides):
    cfg = IngestConfig(clip_frames=25, clip_stride=25, identity_frames=0, **overrides)
    stage = IngestStage(cfg, ClipStore.for_settings(tmp_path / "clips", {"test": 1}))
    return stage([Record("v", "video", meta={"source": str(path), "speaker": "spk"})])


def table_of(records, tmp_path):
    write_table(tmp_path / "samples.parquet", [ledger_entry(r.key, r.kind, r.meta) for r in records])
    return read_table(tmp_path / "samples.parquet")


def late_face_video(tmp_path, speech):
    n = len(speech) * 25 // SR
    noise = np.random.default_rng(0).integers(0, 256, (FACELESS, 192, 192, 3), dtype=np.uint8)
    return write_video(tmp_path / "late_face.mp4", np.concatenate([noise, face_frames(n - FACELESS)]),
                       audio=speech), n


def test_frames_no_clip_used_are_rows_with_a_reason(tmp_path, speech):
    path, n = late_face_video(tmp_path, speech)
    records = ingest(path, tmp_path)
    clips = [r for r in records if r.kind == "clip"]
    assert clips and clips[0].meta["frame_range"][0] == FACELESS
    rows = [r for r in table_of(records, tmp_path) if r["kind"] == "frames"]
    spans = [(r["frame_start"], r["frame_end"], r["reason"]) for r in rows]
    assert spans[0] == (0, FACELESS, "no_face")
    last_end = max(c.meta["frame_range"][1] for c in clips)
    assert spans[-1] == (last_end, n, "track_remainder_shorter_than_clip")  # fewer than 25 frames were left
    assert all(r["fate"] == "unused" and r["video_key"] == "v" and r["stage"] == "ingest" for r in rows)
    used = set()  # every frame is in exactly one clip or one unused row
    for c in clips:
        used |= set(range(*c.meta["frame_range"]))
    unused = [k for r in rows for k in range(r["frame_start"], r["frame_end"])]
    assert sorted(used | set(unused)) == list(range(n)) and not used & set(unused)


def test_a_video_cut_short_by_max_clips_says_so(tmp_path, still_talker):
    records = ingest(still_talker, tmp_path, max_clips_per_video=1)
    rows = [r for r in table_of(records, tmp_path) if r["kind"] == "frames"]
    assert rows[-1]["reason"] == "max_clips_per_video" and rows[0]["frame_start"] == 25


def test_unused_ranges_name_what_broke_the_track():
    use = FrameUse(read=100, unusable={0: "no_face", 1: "no_face", 60: "dark_frame", 61: "multiple_faces"},
                   breaks={60, 90})
    assert use.unused_ranges([[2, 27], [27, 52]]) == [
        [0, 2, "no_face"], [52, 60, "track_remainder_shorter_than_clip"], [60, 61, "dark_frame"],
        [61, 62, "multiple_faces"], [62, 100, "face_track_shorter_than_clip"]]
    assert FrameUse(read=30, stopped=True).unused_ranges([[0, 25]], total=80) == [[25, 80, "max_clips_per_video"]]


def test_rejected_rows_carry_their_detail(tmp_path):
    entries = [
        ledger_entry("p1", "pair", {"filtered": "lmd_below_1.5", "filtered_by": "mouth_distance",
                                    "scores": {"lmd": 0.8312}}),
        ledger_entry("c1", "clip", {"rejected": "no_speech", "reject_detail": "speech in 3% of the clip"}),
        ledger_entry("v1", "video", {"rejected": "resolution_too_small", "reject_detail": "16x16 < 64"}),
        ledger_entry("p2", "pair", {"scores": {"lmd": 2.0}}),
    ]
    write_table(tmp_path / "t.parquet", entries)
    detail = {r["key"]: r["detail"] for r in read_table(tmp_path / "t.parquet")}
    assert detail == {"p1": "lmd = 0.8312 < 1.5", "c1": "speech in 3% of the clip",
                      "v1": "16x16 < 64", "p2": None}


def test_a_stage_error_row_carries_the_exception_message(tmp_path):
    from factory.stage import Stage

    class Picky(Stage):
        name = "picky"

        def process(self, records):
            for r in records:
                if r.meta["x"] < 0:
                    raise ValueError(f"x must be >= 0, got {r.meta['x']}")
            return records

    out = Picky()([Record("a", "pair", meta={"x": 1}), Record("b", "pair", meta={"x": -1})])
    rows = {r["key"]: r for r in table_of(out, tmp_path)}
    assert rows["b"]["reason"] == "picky_error:ValueError"
    assert rows["b"]["detail"] == "ValueError: x must be >= 0, got -1" and rows["a"]["detail"] is None
