"""Shared test media, made offline from real sources: scikit-image's astronaut photo (a real face)
and espeak-ng speech."""

from __future__ import annotations

import subprocess

import cv2
import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly
from skimage import data

from tests.cli import FINISHED_RUN, run_factory
from tests.media import write_video

SR = 16000


def espeak(text: str, path) -> np.ndarray:
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(path), text], check=True)
    wav, rate = sf.read(str(path), dtype="float32")
    return (np.clip(resample_poly(wav, SR, rate), -1, 1) * 32767).astype(np.int16)


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> np.ndarray:
    """About six seconds of real synthetic speech, int16 at 16 kHz."""
    path = tmp_path_factory.mktemp("speech") / "s.wav"
    return espeak("The quick brown fox jumps over the lazy dog, and then it runs far away.", path)


def face_frames(n: int, size: int = 192, faces: int = 1) -> np.ndarray:
    """n frames of the astronaut's face with a gentle sway (so tracking has work to do)."""
    face = cv2.resize(data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)
    if faces == 2:  # two people side by side, cropped close so the detector sees both
        tight = data.astronaut()[:, 64:448]
        face = cv2.resize(np.concatenate([tight, tight[:, ::-1]], axis=1), (size * 2, size * 4 // 3))
    frames = []
    for i in range(n):
        shift = np.float32([[1, 0, 3 * np.sin(i / 8)], [0, 1, 2 * np.cos(i / 11)]])
        frames.append(cv2.warpAffine(face, shift, face.shape[1::-1], borderMode=cv2.BORDER_REFLECT))
    return np.stack(frames)


@pytest.fixture(scope="session")
def still_talker(tmp_path_factory, speech):
    """A real face and real speech (the mouth does not move: enough for ingest)."""
    path = tmp_path_factory.mktemp("media") / "still_talker.mp4"
    n = len(speech) * 25 // SR
    return write_video(path, face_frames(n), audio=speech)


@pytest.fixture(scope="session")
def talking_videos(tmp_path_factory):
    """Two short talking-face videos whose mouths move with the speech, plus a non-video and a
    broken file, as a user's folder might hold."""
    from factory.demo import make_talking_video

    folder = tmp_path_factory.mktemp("videos")
    make_talking_video(folder / "one.mp4", "Peter piper picked a peck of pickled peppers, a peck indeed.",
                       seconds=5.0, size=256, seed=1)
    make_talking_video(folder / "two.mp4", "How much wood would a woodchuck chuck if it could chuck wood?",
                       seconds=5.0, size=256, seed=2)
    (folder / "notes.txt").write_text("not a video")
    (folder / "broken.mp4").write_bytes(b"\x00" * 100)
    return folder


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, talking_videos):
    """The output folder of one small local `factory run` on talking_videos (tests.cli.FINISHED_RUN),
    made once per session. Read it only: a test that changes an output copies this one first
    (shutil.copytree into its tmp_path)."""
    out = tmp_path_factory.mktemp("finished_run") / "out"
    assert run_factory(out, *FINISHED_RUN, videos=talking_videos) == 0
    return out


@pytest.fixture(scope="session")
def s3_endpoint():
    """A local S3 (moto's server mode, tests/s3_server.py) on 127.0.0.1, one per session."""
    from tests.s3_server import s3_server

    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(s3_endpoint, request):
    """`s3://BUCKET` of a new bucket on the local S3, with the AWS variables for it set during the test only."""
    import re

    from tests.s3_server import make_bucket, s3_environment

    name = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:50] or "bucket"
    with s3_environment(s3_endpoint):
        yield make_bucket(f"t-{name}")
