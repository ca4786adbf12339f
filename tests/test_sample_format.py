"""What a training job gets from a sample (issue 10): an exact background after decoding, the
compositing alpha, motion frames, the speech mask, NaN-free landmarks, and the audio convention.

Real tars and real PyAV decoding throughout: a pair is encoded by the encode stage's own code,
written with webdataset's TarWriter and read back by manifests.reader as a training job would.
"""

from __future__ import annotations

import io
import shutil

import av
import cv2
import numpy as np
import pytest
import webdataset as wds
from skimage import data

from factory.demo import loudness
from factory.faces.landmarks import INNER_LIP_GAP
from factory.faces.masks import composite, feathered_alpha
from factory.payload import PairMedia
from factory.stages.encode import pair_files
from factory.stages.track import clean_landmarks
from manifests.format import read_manifest
from manifests.reader import decode_sample, iter_pairs
from manifests.verify import verify

T, S = 12, 256


def in_memory_pair(motion: bool = True) -> PairMedia:
    """A pair as generate leaves it: a real face, a different render composited by a feathered
    mask, and an occluder moving across the mouth (so the alpha changes from frame to frame)."""
    face = cv2.resize(data.astronaut()[:256, 96:352], (S, S))
    real = np.stack([np.roll(face, t, axis=1) for t in range(T)])
    render = np.stack([np.roll(face[::-1], 3 * t, axis=0) for t in range(T)])
    mask = np.zeros((S, S), np.uint8)
    mask[150:220, 80:180] = 1
    alpha = np.repeat(feathered_alpha(mask, 5, 10)[None], T, axis=0)
    for t in range(T):  # an occluder kept real: alpha 0 under it
        alpha[t, 160:200, 60 + 8 * t:90 + 8 * t] = 0
    landmarks = np.random.default_rng(0).uniform(0, S, (T, 478, 2)).astype(np.float32)
    tracked = landmarks.copy()
    tracked[[0, 5, 6]] = np.nan  # the detector lost the face on these frames
    rng = np.random.default_rng(1)
    return PairMedia(real_frames=real, syn_frames=composite(real, render, alpha),
                     real_audio=rng.integers(-999, 999, T * 640).astype(np.int16),
                     alt_audio=rng.integers(-999, 999, T * 640).astype(np.int16),
                     clip_landmarks=landmarks, real_tracked=tracked, syn_tracked=np.full_like(tracked, np.nan),
                     transforms=np.zeros((T, 2, 3), np.float32), mask=mask,
                     alpha=np.rint(alpha * 255).astype(np.uint8),
                     motion_frames=real[:5, ::-1].copy() if motion else None, speech=np.arange(T) % 3 > 0)


def through_a_tar(media: PairMedia, tmp_path) -> dict:
    """Encode as the encode stage does, write a real shard, read it back with the reader."""
    files, stored = pair_files(media, 25, 16000, 18)
    files["meta.json"] = __import__("json").dumps({"key": "k", **stored}).encode()
    with wds.TarWriter(str(tmp_path / "s.tar")) as sink:
        sink.write({"__key__": "k", **files})
    (sample,) = wds.WebDataset(str(tmp_path / "s.tar"), shardshuffle=False, empty_check=False)
    return sample


def test_background_is_bit_exact_after_decoding(tmp_path):
    media = in_memory_pair()
    pair = decode_sample(through_a_tar(media, tmp_path))
    assert np.array_equal(pair["alpha"], media.alpha)  # lossless, occluder included
    outside = pair["alpha"] == 0
    assert np.array_equal(pair["syn"][outside], pair["real"][outside])  # what the model must leave alone
    inside = np.abs(pair["syn"].astype(int) - media.syn_frames.astype(int))[~outside]
    assert inside.mean() < 6  # lossy inside, like the real side (sharp test image, CRF 18)
    assert pair["syn"].shape == pair["real"].shape == (T, S, S, 3)


def test_lossy_streams_are_yuv420p(tmp_path):
    sample = through_a_tar(in_memory_pair(), tmp_path)
    streams = [name for name in sample if name.endswith(".mp4")]
    assert sorted(streams) == ["motion.mp4", "real.mp4", "syn_region.mp4"]
    for name in streams:
        with av.open(io.BytesIO(sample[name])) as container:
            assert container.streams.video[0].codec_context.pix_fmt == "yuv420p", name


def test_sample_carries_motion_frames_speech_and_clean_landmarks(tmp_path):
    media = in_memory_pair()
    pair = decode_sample(through_a_tar(media, tmp_path))
    assert pair["motion"].shape == (5, S, S, 3) and pair["meta"]["motion_frames"] == 5
    assert np.abs(pair["motion"].astype(int) - media.motion_frames).mean() < 4
    assert pair["speech"].dtype == bool and np.array_equal(pair["speech"], media.speech)
    for side in ("real", "syn"):
        assert not np.isnan(pair[f"{side}_landmarks"]).any()
    assert pair["real_landmarks_valid"].tolist() == [t not in (0, 5, 6) for t in range(T)]
    assert not pair["syn_landmarks_valid"].any()  # never tracked: the real side's points, flagged

    none = decode_sample(through_a_tar(in_memory_pair(motion=False), tmp_path))
    assert none["motion"].shape == (0, S, S, 3) and none["meta"]["motion_frames"] == 0


def test_clean_landmarks_interpolates_lost_frames_and_falls_back():
    tracked = np.zeros((5, 478, 2), np.float32)
    tracked[:, :, 0] = np.arange(5)[:, None] * 10
    tracked[[0, 2]] = np.nan
    clean, valid = clean_landmarks(tracked, np.full_like(tracked, 7))
    assert valid.tolist() == [False, True, False, True, True]
    assert clean[:, 0, 0].tolist() == [10, 10, 20, 30, 40]  # held at the start, linear between
    clean, valid = clean_landmarks(np.full_like(tracked, np.nan), np.full_like(tracked, 7))
    assert not valid.any() and (clean == 7).all()


# --- on the session's finished demo run: what iter_pairs gives a training job ---


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    return np.linalg.norm(landmarks[:, INNER_LIP_GAP[1]] - landmarks[:, INNER_LIP_GAP[0]], axis=1)


@pytest.fixture(scope="module")
def run_pairs(finished_run):
    return list(iter_pairs(finished_run / "manifest.json", augment=False))  # as stored


def test_a_finished_run_reads_back_exact_and_complete(finished_run, run_pairs):
    assert read_manifest(finished_run / "manifest.json")["sample_format"] == 2
    assert verify(finished_run)[0] == []
    assert run_pairs
    by_key = {p["key"]: p for p in run_pairs}
    with_motion = 0
    for pair in run_pairs:
        outside = pair["alpha"] == 0
        assert outside.any() and (~outside).any()
        assert np.array_equal(pair["syn"][outside], pair["real"][outside])
        assert not np.isnan(pair["real_landmarks"]).any() and not np.isnan(pair["syn_landmarks"]).any()
        assert pair["real_landmarks_valid"].shape == (len(pair["real"]),)
        # the per-frame speech mask agrees with ingest's share of speech in the clip's audio
        assert pair["speech"].shape == (len(pair["real"]),)
        assert abs(pair["speech"].mean() - pair["meta"]["speech_ratio"]) < 0.1
        video, index = pair["key"].rsplit("_c", 1)
        before = by_key.get(f"{video}_c{int(index) - 1:04d}")
        if pair["meta"]["motion_frames"]:
            with_motion += 1
            assert pair["motion"].shape == (5, *pair["real"].shape[1:])
            if before is not None:  # the real frames just before this clip, up to coding
                assert np.abs(pair["motion"].astype(int) - before["real"][-5:].astype(int)).mean() < 3
    assert with_motion  # the demo's back-to-back clips have them


def test_synthetic_lips_follow_alt_audio_and_real_lips_real_audio(run_pairs):
    """The convention trainers rely on (README, "Sample contents"): syn's lips say alt.wav, real's
    say real.wav; X-Dub trains V_syn + A_real -> V_real. The demo's mouths open with loudness."""

    def corr(a, b):
        return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0

    rows = []
    for p in run_pairs:
        n = len(p["real"])
        real_loud, alt_loud = loudness(p["real_audio"], n, 25), loudness(p["alt_audio"], n, 25)
        syn_open, real_open = mouth_opening(p["syn_landmarks"]), mouth_opening(p["real_landmarks"])
        rows.append([corr(syn_open, alt_loud), corr(syn_open, real_loud), corr(real_open, real_loud)])
    syn_alt, syn_real, real_real = np.mean(rows, axis=0)
    assert syn_alt > 0.4 and real_real > 0.4, rows
    assert syn_alt > syn_real + 0.3, rows


def test_verify_names_a_sample_missing_a_member(finished_run, tmp_path):
    out = shutil.copytree(finished_run, tmp_path / "out")
    shard = out / read_manifest(out / "manifest.json")["shardlist"][0]["url"]
    samples = list(wds.WebDataset(str(shard), shardshuffle=False, empty_check=False))
    with wds.TarWriter(str(shard)) as sink:
        for s in samples:
            sink.write({k: v for k, v in s.items() if k != "alpha.npz" and k not in ("__url__", "__local_path__")})
    problems = verify(out)[0]
    assert any("lacks alpha.npz" in p for p in problems), problems


def test_generate_hands_the_motion_frames_and_speech_to_the_sample(tmp_path):
    """Whatever the generator asks for, the pair carries m = 5 real frames from before the clip
    (when pairing found a contiguous one) and ingest's per-frame speech."""
    from factory.clips import load_clip
    from factory.records import Record
    from factory.stages.generate import GenerateConfig, GenerateStage
    from tests.contracts import clip_pair_on_disk

    real, alt = clip_pair_on_disk(tmp_path)
    (tmp_path / "before").mkdir()
    before, _ = clip_pair_on_disk(tmp_path / "before", seed=5)
    n = len(load_clip(real).frames)
    speech = [i % 2 for i in range(n)]
    meta = {"clip_path": str(real), "alt_clip_path": str(alt), "motion_clip_path": str(before), "speech": speech}
    stage = GenerateStage(GenerateConfig())  # transplant: uses no motion frames itself
    with_motion, alone = stage([Record("k", "pair", meta=meta),
                                Record("j", "pair", meta={"clip_path": str(real), "alt_clip_path": str(alt)})])
    assert np.array_equal(with_motion.media.motion_frames, load_clip(before).frames[-5:])
    assert with_motion.media.speech.tolist() == [bool(s) for s in speech]
    assert alone.media.motion_frames is None and alone.media.speech is None


def test_format_1_samples_still_decode():
    """Shards written before format 2 (whole syn.mp4, no alpha) read as they did."""
    from factory.media.encode import mp4_bytes

    media = in_memory_pair()
    sample = {"__key__": "k", "real.mp4": mp4_bytes(media.real_frames), "syn.mp4": mp4_bytes(media.syn_frames),
              "meta.json": b'{"key": "k"}'}
    pair = decode_sample(sample)
    assert pair["syn"].shape == pair["real"].shape == (T, S, S, 3) and "alpha" not in pair


def test_the_reader_applies_the_recorded_augmentation_and_keeps_the_clean_pair(run_pairs):
    """The shards hold every pair clean; the reader replays meta["augment"] on both sides."""
    from augment.stage import AugmentConfig, AugmentStage
    from factory.records import Record
    from manifests.reader import with_augmentation

    stored = run_pairs[0]
    clean = dict(stored, meta={k: v for k, v in stored["meta"].items() if k != "augment"})  # whatever the run drew
    media = PairMedia(real_frames=clean["real"], clip_landmarks=clean["real_landmarks"])
    for kind in ("relight", "occlusion"):
        stage = AugmentStage(AugmentConfig(share=1.0, occlusion=kind == "occlusion", relight=kind == "relight"), seed=3)
        (record,) = stage([Record(clean["key"], "pair", meta={}, media=media)])
        sample = dict(clean, meta=dict(clean["meta"], augment=record.meta["augment"]))
        out = with_augmentation(sample)
        assert out["clean_real"] is clean["real"] and out["clean_syn"] is clean["syn"]
        changed = np.any(out["real"] != clean["real"], axis=-1)
        assert changed.mean() > 0.01  # the augmentation shows
        same_input = np.all(clean["real"] == clean["syn"], axis=-1)  # outside the edit
        assert np.array_equal(out["real"][same_input], out["syn"][same_input])  # applied identically
        assert ("augment_mask" in out) == (kind == "occlusion")
    assert with_augmentation(clean) is clean  # a pair not drawn for augmentation is read as stored
