"""One run over a folder of every kind of bad (and awkward but good) input: it exits 0, writes
pairs from the good files and records a specific reason for each bad one."""

import numpy as np
import pytest

from factory.inputs import video_key
from factory.media.audio import load_audio
from factory.media.video import iter_frames
from manifests.table import read_table
from manifests.verify import verify
from tests.cli import LOCAL, SMALL, run_factory
from tests.conftest import SR, face_frames
from tests.media import set_mp4_rotation, write_video

LONG_NAME = "a long file name with spaces — ünïcødé 日本語 and more words to make it long " * 2


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, talking_videos, speech):
    folder = tmp_path_factory.mktemp("corpus")
    good = talking_videos / "one.mp4"
    frames = np.stack([f for _, f in iter_frames(good)])
    audio = load_audio(good)
    n = len(speech) * 25 // SR
    bad = {
        "truncated.mp4": ("unreadable_container", lambda p: p.write_bytes(good.read_bytes()[: good.stat().st_size // 2])),
        "zero_bytes.mp4": ("empty_file", lambda p: p.write_bytes(b"")),
        "audio_only.mp4": ("no_video_stream", lambda p: write_video(p, None, audio=speech)),
        "video_only.mp4": ("no_audio_stream", lambda p: write_video(p, face_frames(n))),
        "silent.mp4": ("silent_audio", lambda p: write_video(p, face_frames(n), audio=np.zeros_like(speech))),
        "no_face.mp4": ("no_face", lambda p: write_video(
            p, np.random.default_rng(1).integers(0, 256, (n, 96, 96, 3), dtype=np.uint8), audio=speech)),
        "two_faces.mp4": ("multiple_faces", lambda p: write_video(p, face_frames(n, faces=2), audio=speech)),
        "tiny_16x16.mp4": ("resolution_too_small", lambda p: write_video(p, face_frames(n, size=16), audio=speech)),
    }
    for name, (_, make) in bad.items():
        make(folder / name)
    times = np.cumsum(np.random.default_rng(3).uniform(1 / 40, 1 / 20, len(frames) * 2))
    times = times[times < len(frames) / 25] - times[0]
    picks = np.minimum((times * 25).astype(int), len(frames) - 1)
    write_video(folder / "variable_rate.mp4", frames[picks], audio=audio, times=list(times))
    rotated = write_video(folder / "rotated.mp4", np.ascontiguousarray(np.rot90(frames, k=-1, axes=(1, 2))), audio=audio)
    set_mp4_rotation(rotated, 90)
    (folder / "wrong_extension.avi").write_bytes(good.read_bytes())  # an MP4 named .avi
    (folder / f"{LONG_NAME}.mp4").write_bytes(good.read_bytes())
    good_names = ["variable_rate.mp4", "rotated.mp4", "wrong_extension.avi", f"{LONG_NAME}.mp4"]
    return folder, {name: reason for name, (reason, _) in bad.items()}, good_names


@pytest.mark.slow
def test_one_run_over_the_whole_corpus(tmp_path, corpus):
    folder, bad, good = corpus
    out = tmp_path / "out"
    code = run_factory(out, *SMALL, LOCAL, videos=folder)
    assert code == 0
    table = read_table(out / "samples.parquet")
    by_video = {}
    for row in table:
        by_video.setdefault(row["video_key"] or row["key"], []).append(row)
    for name, reason in bad.items():
        rows = by_video[video_key(folder / name)]
        assert [(r["kind"], r["reason"]) for r in rows] == [("video", reason)], name
    # the numbers behind a reason are in the table, not only in the ledger
    assert by_video[video_key(folder / "tiny_16x16.mp4")][0]["detail"] == "16x16 < 64"
    assert by_video[video_key(folder / "silent.mp4")][0]["detail"].startswith("speech in ")
    assert '"no_face"' in by_video[video_key(folder / "no_face.mp4")][0]["detail"]  # per-reason frame counts
    first = min(good, key=lambda name: video_key(folder / name))
    for name in good:  # all four are one video (copies, a re-timing, a rotation): read, cut, then deduplicated
        rows = by_video[video_key(folder / name)]
        assert all(r["kind"] != "video" for r in rows), (name, rows[0]["reason"])  # read and cut into clips
        assert all(r["fate"] == "kept" or r["reason"] for r in rows)
        assert all(r["fate"] == "unused" for r in rows if r["kind"] == "frames")  # frames no clip took, and why
        if name == first:
            assert any(r["fate"] == "kept" for r in rows), (name, [(r["key"], r["reason"]) for r in rows])
        else:
            assert any(str(r["reason"]).startswith("duplicate_of:") for r in rows), name
    assert verify(out)[0] == []
