"""Duplicate videos are found before pairing: byte-identical copies by their SHA-256, a re-encode
at another size and quality and a trimmed copy by the clips' fingerprints; two different videos
of the same (real) face are not duplicates. Real media: the test talking videos, ingested."""

from __future__ import annotations

import shutil
from collections import defaultdict

import av
import cv2
import numpy as np
import pytest

from factory.cli import main
from factory.clip_store import ClipStore
from factory.duplicates import find_duplicates, held_out, reject_duplicates
from factory.media.audio import load_audio
from factory.media.encode import add_aac_stream, mux_audio
from factory.media.video import iter_frames
from tests.cli import CONFIG, LOCAL, SMALL

TRIM = 10  # frames cut from the start: the copy's clips straddle the original's


def reencode(src, dst, size: int, crf: int, trim: int = 0) -> None:
    frames = np.stack([f for _, f in iter_frames(src, 25)])[trim:]
    audio = load_audio(src)[trim * 640:]
    with av.open(str(dst), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"crf": str(crf)})
        stream.height = stream.width = size
        stream.pix_fmt = "yuv420p"
        sound = add_aac_stream(out)
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA),
                                               format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        mux_audio(out, sound, audio)


@pytest.fixture(scope="module")
def clips_by_video(tmp_path_factory, talking_videos):
    """{file stem: its clips}, ingested from: one.mp4, two byte-identical copies of it, a smaller
    stronger-compressed re-encode, a trimmed re-encode, and two.mp4 (the same face saying other words)."""
    root = tmp_path_factory.mktemp("dups")
    videos = root / "videos"
    videos.mkdir()
    one = talking_videos / "one.mp4"
    for name in ("a_one", "b_copy", "c_copy"):
        shutil.copy(one, videos / f"{name}.mp4")
    reencode(one, videos / "d_smaller.mp4", 192, 32)
    reencode(one, videos / "e_trimmed.mp4", 256, 23, trim=TRIM)
    shutil.copy(talking_videos / "two.mp4", videos / "f_two.mp4")
    code = main(["ingest", CONFIG, *SMALL, LOCAL, "input.demo=false", f"input.paths=[{videos}]",
                 f"clip_store={root / 'clips'}", f"out={root / 'ignored'}"])
    assert code == 0
    (path,) = (root / "clips").glob("ingest-*")
    out = defaultdict(list)
    for record in ClipStore.open(path).records():
        if record.kind == "clip" and not record.rejected:
            out[record.meta["video_key"].rsplit("-", 1)[0]].append(record)
    assert set(out) == {"a_one", "b_copy", "c_copy", "d_smaller", "e_trimmed", "f_two"}, dict(out)
    return out


def test_byte_identical_copies_keep_the_first_videos_clips_only(clips_by_video):
    clips = [c for video in ("a_one", "b_copy", "c_copy") for c in clips_by_video[video]]
    found = find_duplicates(clips)
    original = {tuple(c.meta["frame_range"]): c.key for c in clips_by_video["a_one"]}
    for copy in ("b_copy", "c_copy"):
        for clip in clips_by_video[copy]:
            assert found[clip.key] == original[tuple(clip.meta["frame_range"])]
    assert not any(c.key in found for c in clips_by_video["a_one"])
    kept = [c for c in reject_duplicates(clips) if not c.rejected]
    assert kept == clips_by_video["a_one"]  # three copies give one video's pairs, not three
    assert all(c.rejected.startswith("duplicate_of:") for c in clips if c not in kept)


@pytest.mark.parametrize("copy", ["d_smaller", "e_trimmed"])
def test_a_reencode_and_a_trimmed_copy_are_near_duplicates(clips_by_video, copy):
    clips = clips_by_video["a_one"] + clips_by_video[copy]
    found = find_duplicates(clips)
    originals = {c.key for c in clips_by_video["a_one"]}
    assert all(found[c.key] in originals for c in clips_by_video[copy]), (found, copy)


def test_two_videos_of_the_same_face_are_not_duplicates(clips_by_video):
    assert find_duplicates(clips_by_video["a_one"] + clips_by_video["f_two"]) == {}


def test_a_held_out_split_never_separates_a_clip_from_its_duplicates():
    from factory.records import Record

    clips = [Record(f"{s}{i}", "clip", meta={"speaker": s}) for s in "abcdefghij" for i in range(3)]
    found = {f"{s}{i}": f"{t}{i}" for s, t in zip("bdfhj", "acegi") for i in range(3)}  # b copies a, ...
    splits = [held_out(clips, found, share=0.5, seed=seed) for seed in range(6)]
    assert any(0 < len(test) < len(clips) for test in splits)
    for test in splits:
        assert all((key in test) == (original in test) for key, original in found.items())
    assert held_out(clips, found, 0.5, seed=1) == held_out(clips[::-1], found, 0.5, seed=1)
