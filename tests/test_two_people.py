"""A dialogue edited shot/reverse-shot between two real people on one dimly lit, colour-graded set:
no clip may hold both faces, and no pair may paste one person's lower face onto the other.

The shots are made from two real photos (scikit-image's astronaut, insightface's Tom Hanks),
animated by espeak-ng speech, graded alike (dim, desaturated, warm; matched mean and spread), so
the colour-histogram distance at each cut is ~0.18: well under the old 0.35 cut threshold."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from factory.clip_store import ClipStore
from factory.demo import make_talking_video
from factory.media.audio import load_audio
from factory.media.video import iter_frames
from manifests.table import read_table
from tests.cli import LOCAL, QUIET, run_factory
from tests.media import write_video

SHOT = 60  # frames per shot: not a multiple of the 25-frame clips, so a missed cut mixes a clip
FRAMES = 240


def grade(frames: np.ndarray) -> np.ndarray:
    """One set's look: dim, desaturated, warm."""
    x = frames.astype(np.float32)
    grey = x.mean(-1, keepdims=True)
    return np.clip((grey + 0.3 * (x - grey)) * 0.4 * np.array([1.0, 0.93, 0.85]), 0, 255)


@pytest.fixture(scope="module")
def dialogue(tmp_path_factory) -> Path:
    import insightface

    folder = tmp_path_factory.mktemp("dialogue")
    hanks = cv2.imread(str(Path(insightface.__file__).parent / "data/images/Tom_Hanks_54745.png"))[..., ::-1]
    seconds = FRAMES / 25 + 0.2
    a = make_talking_video(folder / "a.mp4", "Peter piper picked a peck of pickled peppers, a peck of pickled "
                           "peppers indeed, and then some more of them.", seconds=seconds, size=256, seed=1)
    b = make_talking_video(folder / "b.mp4", "How much wood would a woodchuck chuck if a woodchuck could chuck "
                           "wood, they asked, and nobody knew.", seconds=seconds, size=256, seed=2,
                           face=np.ascontiguousarray(hanks))
    fa, fb = (grade(np.stack([f for _, f in iter_frames(str(p), 25)])[:FRAMES]) for p in (a, b))
    flat_a, flat_b = fa.reshape(-1, 3), fb.reshape(-1, 3)  # matched grading: the same mean and spread
    fb = (fb - flat_b.mean(0)) / flat_b.std(0) * flat_a.std(0) + flat_a.mean(0)
    fa, fb = (np.clip(f, 0, 255).astype(np.uint8) for f in (fa, fb))
    audio_a, audio_b = load_audio(str(a)), load_audio(str(b))
    frames, audio = [], []
    for i, start in enumerate(range(0, FRAMES, SHOT)):
        f, s = (fa, audio_a) if i % 2 == 0 else (fb, audio_b)
        frames.append(f[start:start + SHOT])
        audio.append(s[start * 640:(start + SHOT) * 640])
    return write_video(folder / "dialogue.mp4", np.concatenate(frames), audio=np.concatenate(audio))


def person(frame: int) -> int:
    return (frame // SHOT) % 2


@pytest.mark.slow
def test_no_clip_and_no_pair_mixes_two_people(dialogue, tmp_path):
    out = tmp_path / "out"
    assert run_factory(out, "ingest.clip_frames=25", "ingest.clip_stride=25", LOCAL, QUIET, "augment.share=0",
                       "write.keep_rejected=true", videos=dialogue.parent) == 0
    (store,) = (out / "clips").glob("ingest-*")
    clips = [r for r in ClipStore.open(store).records() if r.kind == "clip" and not r.rejected
             and r.meta["source"].endswith("dialogue.mp4")]
    assert len(clips) >= 4, "both people's shots should give clips"
    for clip in clips:
        start, end = clip.meta["frame_range"]
        assert person(start) == person(end - 1), f"{clip.key} spans a cut: frames {start}-{end}"
    rows = read_table(out / "samples.parquet")
    # every pair written (kept, or set aside by a threshold), except those alt_identity caught
    pairs = [r for r in rows if r["kind"] == "pair" and r.get("shard") and not str(r["reason"]).startswith("alt_csim")]
    by_key = {c.key: c for c in clips}
    mixed = [r["key"] for r in pairs if r["key"] in by_key and r["alt_key"] in by_key
             and person(by_key[r["key"]].meta["frame_range"][0]) != person(by_key[r["alt_key"]].meta["frame_range"][0])]
    assert pairs and not mixed, f"pairs pasting the other person's lower face: {mixed}"
    speakers = {person(c.meta["frame_range"][0]): set() for c in clips}
    for c in clips:
        speakers[person(c.meta["frame_range"][0])].add(c.meta["speaker"])
    # speakers are people: the ingest store keeps the file's speaker, the pairs run clusters faces
    assert all(len(s) == 1 for s in speakers.values())
