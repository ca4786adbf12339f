"""`factory dub VIDEO AUDIO --checkpoint DIR -o OUT.mp4` end to end on a demo talking video: real
decoding, MediaPipe tracking, the transplant generator and a tiny random dit_inpainter folder,
H.264/AAC out. What a user is promised: the video's frames, rate and size; the new audio as the
only sound, fitted to the video's length; the picture outside the face as it was (up to the
codec); the mouth re-rendered; and one-line errors with exit 2 (arguments) or 3 (input)."""

from __future__ import annotations

from fractions import Fraction
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
import torch

from factory.cli import main
from factory.dubbing import DubbedSegment, register_dubber
from factory.dubbing.paste import paste_back
from factory.dubbing.driving import driving_frames, loudness_db
from factory.dubbing.run import fit, segments
from factory.dubbing.writer import Mp4Writer
from factory.faces.landmarks import MOUTH, FaceLandmarker
from factory.faces.masks import composite
from factory.media.audio import decode_audio
from factory.media.video import iter_frames, probe
from factory.stages.generate import lower_face_alpha
from tests.cli import factory_command
from tests.conftest import espeak, face_frames
from tests.media import write_video

SR = 16000
FACE_MARGIN = 16  # frame pixels around the face's landmark hull that the paste may reach (feather)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def media(tmp_path_factory, talking_videos):
    """The demo video (5 s, 256 px, 25 fps), a shorter and a longer new audio (other words)."""
    folder = tmp_path_factory.mktemp("dub_media")
    words = espeak("How much wood would a woodchuck chuck if it could chuck wood, said the old man.",
                   folder / "words.wav")
    short, long = words[:int(3.5 * SR)], np.concatenate([words, words])[:int(6.5 * SR)]
    sf.write(folder / "short.wav", short, SR, subtype="PCM_16")
    sf.write(folder / "long.wav", long, SR, subtype="PCM_16")
    return {"video": talking_videos / "one.mp4", "short": folder / "short.wav", "long": folder / "long.wav",
            "short_pcm": short, "long_pcm": long, "folder": folder}


def decoded(path) -> np.ndarray:
    return np.stack([f for _, f in iter_frames(path, 25)])


@pytest.fixture(scope="module")
def original(media):
    """The video's own decode, its face's landmarks per frame (MediaPipe), and what re-encoding
    it alone costs outside the face (the codec floor the dubbed output is held to)."""
    frames = decoded(media["video"])
    with FaceLandmarker(static=False) as landmarker:
        points = [landmarker.detect(f)[0][:, :2] for f in frames]
    outside = []
    for f, p in zip(frames, points):
        hull = np.zeros(f.shape[:2], np.uint8)
        cv2.fillConvexPoly(hull, cv2.convexHull(np.round(p).astype(np.int32)), 1)
        outside.append(cv2.dilate(hull, np.ones((2 * FACE_MARGIN + 1,) * 2, np.uint8)) == 0)
    again = media["folder"] / "reencoded.mp4"
    writer = Mp4Writer(again, frames.shape[2], frames.shape[1], Fraction(25), SR)
    for f in frames:
        writer.add(f)
    writer.finish(np.zeros(SR, np.int16))
    floor = outside_error(frames, decoded(again), np.stack(outside))
    return {"frames": frames, "points": points, "outside": np.stack(outside), "floor": floor}


def outside_error(a: np.ndarray, b: np.ndarray, outside: np.ndarray) -> tuple[float, float]:
    """(mean, 99.9th percentile) of the per-pixel max channel difference outside the face."""
    d = np.abs(a.astype(np.int16) - b).max(-1)[outside]
    return float(d.mean()), float(np.percentile(d, 99.9))


def mouth_change(a: np.ndarray, b: np.ndarray, points) -> np.ndarray:
    """Per frame: mean absolute difference inside the box around the mouth's landmarks."""
    out = []
    for fa, fb, p in zip(a, b, points):
        (x0, y0), (x1, y1) = np.floor(p[MOUTH].min(0)).astype(int), np.ceil(p[MOUTH].max(0)).astype(int)
        out.append(np.abs(fa[y0:y1, x0:x1].astype(np.int16) - fb[y0:y1, x0:x1]).mean())
    return np.array(out)


def dub_cli(video, audio, out, *model: str) -> int:
    return main(["dub", str(video), str(audio), *model, "-o", str(out), "-q"])


def check_dubbed(out: Path, media, original, new_pcm: np.ndarray) -> dict:
    """The promises every dubber's output keeps; returns the measured numbers."""
    source, result = probe(media["video"]), probe(out)
    assert (result.width, result.height, result.fps) == (source.width, source.height, source.fps)
    frames = decoded(out)
    assert frames.shape == original["frames"].shape  # every frame, none added
    # the sound is the new audio alone, trimmed or padded with silence to the video's 5 s
    sound = decode_audio(out, SR).samples.astype(np.float32)
    want = np.zeros(5 * SR, np.float32)
    want[:min(len(new_pcm), len(want))] = new_pcm[:len(want)]
    assert abs(len(sound) - len(want)) <= 1024  # within one AAC frame
    n = min(len(sound), len(want))
    spoken = min(len(new_pcm), n)
    corr = np.corrcoef(sound[:spoken], want[:spoken])[0, 1]
    assert corr > 0.95, corr
    old = decode_audio(media["video"], SR).samples.astype(np.float32)
    m = min(n, len(old))
    assert abs(np.corrcoef(sound[:m], old[:m])[0, 1]) < 0.3  # the video's own sound is gone
    if spoken < n:  # past the new audio's end: silence
        assert np.abs(sound[spoken + 1024:n]).max() < 300
    # outside the face: the original picture, up to re-encoding it
    mean, p999 = outside_error(original["frames"], frames, original["outside"])
    floor_mean, floor_p999 = original["floor"]
    assert mean <= floor_mean * 1.1 + 0.1 and p999 <= floor_p999 + 3, (mean, p999, original["floor"])
    change = mouth_change(original["frames"], frames, original["points"])
    return {"outside_mean": mean, "outside_p999": p999, "mouth_change": change, "frames": frames, "corr": corr}


# 1. the training-free generator: the mouth opens with the new audio's loudness ------------------

@pytest.fixture(scope="module")
def transplant_out(media, tmp_path_factory):
    out = tmp_path_factory.mktemp("dub_transplant") / "dubbed.mp4"
    assert dub_cli(media["video"], media["short"], out, "--generator", "transplant") == 0
    return out


def test_transplant_dub_keeps_the_video_and_replaces_sound_and_mouth(transplant_out, media, original):
    measured = check_dubbed(transplant_out, media, original, media["short_pcm"])
    change = measured["mouth_change"]
    assert change.mean() > 5 * max(measured["outside_mean"], 1.0), change.mean()
    # the lips follow the new audio: the output's mouth opening (MediaPipe on the output) rises and
    # falls with the new audio's loudness, and no longer with the video's own sound
    with FaceLandmarker(static=False) as landmarker:
        gaps = [np.linalg.norm(np.subtract(*landmarker.detect(f)[0][[14, 13], :2])) for f in measured["frames"]]
    new = loudness_db(fit(media["short_pcm"], 125 * 640), 125)
    old = loudness_db(fit(decode_audio(media["video"], SR).samples, 125 * 640), 125)
    follows_new, follows_old = np.corrcoef(gaps, new)[0, 1], np.corrcoef(gaps, old)[0, 1]
    assert follows_new > 0.5 and follows_new > follows_old + 0.2, (follows_new, follows_old)


# 2. a learned generator folder: the tiny random X-Dub Stage I DiT, in bridged segments ------

@pytest.fixture(scope="module")
def dit_folder(tmp_path_factory):
    from factory.generators.dit_inpainter import DiTInpainterGenerator

    folder = tmp_path_factory.mktemp("dub_dit") / "generator"
    DiTInpainterGenerator.tiny().save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_dit_inpainter_folder_dubs_in_segments_with_the_audio_trimmed(dit_folder, media, original, tmp_path):
    out = tmp_path / "dubbed.mp4"
    assert main(["dub", str(media["video"]), str(media["long"]), "--checkpoint", str(dit_folder),
                 "--segment-frames", "50", "-o", str(out), "-q"]) == 0
    measured = check_dubbed(out, media, original, media["long_pcm"])
    assert measured["mouth_change"].min() > 10  # random weights: every frame's mouth is re-rendered
    again = tmp_path / "again.mp4"
    assert main(["dub", str(media["video"]), str(media["long"]), "--checkpoint", str(dit_folder),
                 "--segment-frames", "50", "-o", str(again), "-q"]) == 0
    assert np.array_equal(decoded(again), measured["frames"])  # seeded: the same output twice


def test_a_latent_editor_folder_dubs_every_frame(media, original, tmp_path):
    from factory.generators.latent_editor import LatentEditorGenerator

    LatentEditorGenerator.tiny().save_pretrained(tmp_path / "editor")
    out = tmp_path / "dubbed.mp4"
    assert dub_cli(media["video"], media["short"], out, "--checkpoint", str(tmp_path / "editor")) == 0
    assert check_dubbed(out, media, original, media["short_pcm"])["mouth_change"].min() > 10


# 3. the plug-in path for mask-free dubbers: a registry entry, the protocol's inputs --------

class BrightLips:
    """A stand-in mask-free dubber that records what it is given and brightens the lower face."""

    name, crop_size, motion_frames, fps, sample_rate = "test-bright-lips", 256, 5, 25, 16000
    calls: list = []

    def setup(self, device: str) -> None:
        self.device = device

    def dub_segment(self, frames, landmarks, audio_16k, motion, seed=0) -> DubbedSegment:
        alpha = lower_face_alpha(landmarks, landmarks, frames.shape[1], 2.0, 5)
        out = np.clip(frames.astype(np.int16) + 60, 0, 255).astype(np.uint8)
        BrightLips.calls.append({"seen": composite(frames, out, alpha), "audio": audio_16k.copy(),
                                 "motion": None if motion is None else motion.copy(), "seed": seed})
        return DubbedSegment(out, alpha)


register_dubber("test-bright-lips")(lambda folder, config: BrightLips())


def test_a_registered_dubber_gets_segments_audio_and_motion_frames(media, original, tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text('{"recipe": "test-bright-lips"}')
    BrightLips.calls.clear()
    out = tmp_path / "dubbed.mp4"
    assert main(["dub", str(media["video"]), str(media["short"]), "--checkpoint", str(folder),
                 "--segment-frames", "40", "-o", str(out), "-q"]) == 0
    calls = BrightLips.calls
    assert [len(c["seen"]) for c in calls] == [40, 40, 40, 5]  # 125 frames, one face track
    assert calls[0]["motion"] is None
    for before, after in zip(calls, calls[1:]):  # motion: the previous segment's last 5 frames as shown
        assert np.array_equal(after["motion"], before["seen"][-5:])
    audio = np.concatenate([c["audio"] for c in calls])
    assert len(audio) == 125 * 640  # 640 samples per 25 fps frame
    want = np.zeros(125 * 640, np.int16)
    want[:len(media["short_pcm"])] = media["short_pcm"][:len(want)]
    assert np.array_equal(audio, want)  # the new audio itself, silence after its end
    assert len({c["seed"] for c in calls}) == len(calls)
    assert check_dubbed(out, media, original, media["short_pcm"])["mouth_change"].mean() > 30  # +60 pasted in


# 4. other frame rates: the output keeps the video's ---------------------------------------

def test_a_30_fps_video_keeps_its_rate_and_frame_count(media, tmp_path):
    video = write_video(tmp_path / "thirty.mp4", face_frames(60), fps=30,
                        audio=np.zeros(2 * SR, np.int16))
    out = tmp_path / "dubbed.mp4"
    assert dub_cli(video, media["short"], out, "--generator", "transplant") == 0
    info = probe(out)
    assert info.fps == 30 and (info.width, info.height) == (192, 192)
    assert sum(1 for _ in iter_frames(out, 30)) == 60
    assert abs(len(decode_audio(out, SR).samples) - 2 * SR) <= 1024


def test_frames_where_the_face_is_lost_stay_the_original_frames(media, tmp_path, capsys):
    frames = face_frames(75)
    frames[25:50] = 128  # the face is gone for a second (a cutaway)
    video = write_video(tmp_path / "cutaway.mp4", frames, audio=np.zeros(3 * SR, np.int16))
    out = tmp_path / "dubbed.mp4"
    assert dub_cli(video, media["short"], out, "--generator", "transplant") == 0
    report = capsys.readouterr().out
    assert '"frames_dubbed": 50' in report and '"no_face": 25' in report, report
    before, after = decoded(video), decoded(out)
    assert after.shape == before.shape
    assert np.abs(after[25:50].astype(np.int16) - before[25:50]).max() <= 2  # flat grey, re-encoded


# 5. errors: one line, exit 2 for arguments, 3 for input; no traceback, no output ------------

def test_a_video_without_a_face_exits_3(media, tmp_path, capsys):
    video = write_video(tmp_path / "wall.mp4", np.full((25, 128, 128, 3), 90, np.uint8),
                        audio=np.zeros(SR, np.int16))
    out = tmp_path / "dubbed.mp4"
    assert dub_cli(video, media["short"], out, "--generator", "transplant") == 3
    err = capsys.readouterr().err
    assert "no face found in the video" in err and "25 no_face" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".dub-*"))


@pytest.mark.parametrize("kind", ["text", "empty", "missing", "silent_video"])
def test_unreadable_audio_exits_3(media, tmp_path, capsys, kind):
    audio = tmp_path / "new.wav"
    if kind == "text":
        audio.write_text("this is not audio")
    elif kind == "empty":
        audio.write_bytes(b"")
    elif kind == "silent_video":  # a file with pictures and no sound track
        audio = write_video(tmp_path / "no_sound.mp4", np.zeros((5, 64, 64, 3), np.uint8))
    out = tmp_path / "dubbed.mp4"
    assert dub_cli(media["video"], audio, out, "--generator", "transplant") == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("factory: cannot read the audio") and "\n" not in err, err
    assert not out.exists()


def test_a_missing_or_unusable_checkpoint_exits_2(media, tmp_path, capsys):
    out = tmp_path / "dubbed.mp4"
    assert dub_cli(media["video"], media["short"], out, "--checkpoint", str(tmp_path / "nowhere")) == 2
    assert "nowhere" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"generator": "no-such-model"}')
    assert dub_cli(media["video"], media["short"], out, "--checkpoint", str(tmp_path / "other")) == 2
    assert "no-such-model" in capsys.readouterr().err
    assert dub_cli(media["video"], media["short"], out, "--generator", "dit_inpainter") == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert dub_cli(media["video"], media["short"], "/proc/dubbed.mp4", "--generator", "transplant") == 2
    assert "cannot be written" in capsys.readouterr().err
    assert not out.exists()


# 6. the pieces ------------------------------------------------------------------------------

def test_paste_back_leaves_every_pixel_outside_the_warped_alpha_exact():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    crop = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    alpha = np.zeros((64, 64), np.uint8)
    alpha[30:50, 16:48] = 255
    angle, scale = np.deg2rad(10), 0.8  # frame -> crop: a turned, shrunk face near (80, 60)
    a = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    transform = np.hstack([a, (np.array([32, 32]) - a @ [80, 60])[:, None]])
    out = paste_back(frame, crop, alpha, transform)
    # where the crop's alpha lands, by the inverse map; everywhere else the frame, bit for bit
    support = cv2.warpAffine(alpha, transform, (160, 120), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    assert np.array_equal(out[support == 0], frame[support == 0])
    full = support == 255
    assert full.sum() > 200
    crop_at = cv2.warpAffine(crop, transform, (160, 120), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    assert np.abs(out[full].astype(int) - crop_at[full]).max() <= 1


def test_segments_follow_face_tracks_and_bridge_only_within_one():
    track = np.array([-1, 0, 0, 0, 0, 0, -1, 1, 1, 2])
    assert segments(track, 2) == [(1, 3, False), (3, 5, True), (5, 6, True), (7, 9, False), (9, 10, False)]


def test_driving_frames_open_the_mouth_with_the_loudness():
    """Silence picks the segment's most closed mouth, full voice its most open one."""
    n = 20
    landmarks = np.zeros((n, 478, 2), np.float32)
    landmarks[:, 14, 1] = np.linspace(0, 19, n)[::-1]  # inner-lip gap: frame 0 the widest
    t = np.arange(n * 640) / SR
    voice = (8000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
    audio = np.where(t < n / 2 / 25, 0, voice).astype(np.int16)  # silent, then loud
    picked = driving_frames(landmarks, audio)
    gaps = landmarks[picked, 14, 1]
    assert gaps[:8].max() <= 1 and gaps[12:].min() >= 18, gaps


def test_dub_help_says_what_it_keeps_and_lists_its_exit_codes():
    text = " ".join(subprocess.run(factory_command("dub", "--help"), capture_output=True, text=True,
                                   check=True).stdout.split())
    for said in ("frame count, frame rate and size", "padded with silence", "largest face",
                 "2 bad arguments", "3 bad input", "no face in the video"):
        assert said in text, said
