"""The dubber recipes' held-out measurement metrics (factory/trainers/dubber_metrics.py) on crafted
segments whose answers are known (a clip against itself, against noise, against a face-less clip,
too short for Sync), and two-step `factory train-dubber` runs of each recipe whose eval writes the
new keys into metrics.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from factory.config import ConfigError
from factory.trainers.dubber_metrics import (DubberScorer, EvalIdentityConfig, EvalSyncNetConfig, build_embedder,
                                             build_syncnet, to_uint8, try_build)

TINY_SYNCNET = dict(frames=5, image_size=32, visual_channels=[8, 16], audio_channels=[8, 16], embed_dim=16,
                    norm_groups=4, stem_stride=2)
SYNCNET_OVERRIDE = "syncnet.tiny={frames: 5, image_size: 32, visual_channels: [8, 16], audio_channels: [8, 16], " \
                   "embed_dim: 16, norm_groups: 4, stem_stride: 2}"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def face_segment(frames: int = 9, size: int = 64, seed: int = 0) -> torch.Tensor:
    """(1, 3, T, S, S) in [-1, 1]: the astronaut's template-aligned face with a little noise per frame."""
    from skimage import data

    from factory.faces.align import frame_to_crop, warp_crop
    from tests.faces import astronaut_landmarks

    crop = warp_crop(data.astronaut(), frame_to_crop(astronaut_landmarks(), size), size).astype(int)
    rng = np.random.default_rng(seed)
    video = np.stack([np.clip(crop + rng.integers(-3, 4, crop.shape), 0, 255) for _ in range(frames)])
    return (torch.from_numpy(video.astype(np.float32)).permute(3, 0, 1, 2) / 127.5 - 1)[None]


def speech(frames: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(frames * 640).astype(np.float32) * 0.1)[None]


def tiny_scorer(metrics=("sync", "csim", "lmd", "psnr")) -> DubberScorer:
    return DubberScorer(metrics, syncnet=build_syncnet(EvalSyncNetConfig(tiny=TINY_SYNCNET), "syncnet"),
                        embedder=build_embedder(EvalIdentityConfig(backend="tiny"), "identity"))


def test_a_clip_against_itself_and_against_noise():
    real = face_segment()
    noise = torch.rand(real.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    scorer = tiny_scorer()
    scorer.add({"same": real.clone(), "noise": noise}, real, speech(9))
    r = scorer.result()
    assert r["psnr_same"] == 100.0 and r["psnr_noise"] < 15  # identical frames: the cap, never inf
    assert r["csim_same"] == pytest.approx(1.0, abs=1e-5) and r["csim_noise"] < r["csim_same"] - 0.01
    assert r["lmd_same"] == 0.0  # the same detector on the same crops
    assert "lmd_noise" not in r  # noise has no face: no number, its frames counted as skipped
    assert r["lmd_frames"] == 9 and r["lmd_skipped_frames"] == 9 and "no face" in scorer.notes["lmd"]
    # Sync: identical frames give the real frames' scores; every offset scored (9 frames, window 5: +-4)
    assert r["sync_c_same"] == r["sync_c_real"] and r["sync_d_same"] == r["sync_d_real"]
    assert r["sync_d_noise"] != r["sync_d_real"] and r["sync_c_real"] >= 0
    assert all(np.isfinite(v) for v in r.values())


def test_scores_are_deterministic_and_means_over_segments():
    real = torch.cat([face_segment(seed=0), face_segment(seed=1)])
    edited = real.flip(-1)  # a mirrored face: the same identity, other pixels
    audio = torch.cat([speech(9, 0), speech(9, 1)])
    one, two = tiny_scorer(), tiny_scorer()
    one.add({"edit": edited}, real, audio)
    for i in range(2):  # segment by segment: the same means
        two.add({"edit": edited[i:i + 1]}, real[i:i + 1], audio[i:i + 1])
    a, b = one.result(), two.result()
    assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-6) for k in a)
    assert {"sync_c_edit", "sync_d_edit", "sync_c_real", "csim_edit", "psnr_edit", "lmd_edit"} <= a.keys()


def test_missing_networks_and_short_segments_are_skipped_never_scored():
    real = face_segment(frames=6)
    scorer = DubberScorer(["sync", "csim", "psnr"], sync_note="config key 'syncnet.path' is not set")
    scorer.add({"edit": real}, real, speech(6))
    r = scorer.result()
    assert r == {"psnr_edit": 100.0, "sync_skipped": 1.0, "csim_skipped": 1.0}
    assert "syncnet.path" in scorer.notes["sync"] and "identity" in scorer.notes["csim"]

    short = tiny_scorer(["sync"])  # 6 frames, a 5-frame window: offset 0 only, Sync-C would be 0 by construction
    short.add({"edit": real}, real, speech(6))
    assert short.result() == {"sync_skipped": 1.0} and "too short" in short.notes["sync"]

    nothing = DubberScorer([])
    nothing.add({"edit": real}, real, speech(6))
    assert nothing.result() == {}


def test_network_sources_name_their_keys():
    net, why = try_build(lambda: build_syncnet(EvalSyncNetConfig(), "syncnet"))
    assert net is None and "'syncnet.path'" in why
    net, why = try_build(lambda: build_embedder(EvalIdentityConfig(backend="arcface"), "identity"))
    assert net is None and "'identity.path'" in why
    with pytest.raises(ConfigError, match="identity.backend"):
        build_embedder(EvalIdentityConfig(backend="facenet"), "identity")


def test_to_uint8_is_the_frames_layout_the_metrics_take():
    video = torch.tensor([-1.0, 0.0, 1.0]).reshape(3, 1, 1, 1).expand(3, 2, 4, 4)  # (3, T, S, S): R G B
    out = to_uint8(video)
    assert out.shape == (2, 4, 4, 3) and out.dtype == np.uint8
    assert out[0, 0, 0].tolist() == [0, 128, 255]


def test_unknown_metrics_are_refused_naming_the_key():
    from factory.trainers.xdub_recipe import XDubEvalConfig

    with pytest.raises(ConfigError, match="eval.metrics"):
        XDubEvalConfig(metrics=["sync", "fid"])
    assert XDubEvalConfig().metrics == ["sync", "csim", "lmd", "psnr"]


# two-step runs of each recipe ---------------------------------------------------------------

@pytest.mark.slow  # the session's finished demo run, then two steps and one eval of 2 segments
def test_xdub_eval_writes_the_measurement_metrics(finished_run, tmp_path):
    from factory.trainers.dubbers import train_dubber
    from tests.test_xdub_recipe import CONFIG, tiny

    out = tmp_path / "p1"
    m = train_dubber(CONFIG, tiny(finished_run, out, "phase=1", "loop.eval_every=2", "loop.eval_at_start=false"))
    ev = m["last_eval"]
    for source in ("editor", "synthetic"):
        for key in ("sync_c", "sync_d", "csim", "psnr"):
            assert np.isfinite(ev[f"{key}_{source}"]), f"{key}_{source}"
    assert np.isfinite(ev["sync_c_real"]) and np.isfinite(ev["sync_d_real"])
    # 2 segments of 8 generated frames, 2 sources: every frame compared or counted as skipped
    assert ev["lmd_frames"] + ev["lmd_skipped_frames"] == 2 * 8 * 2
    assert ev["psnr_synthetic"] > ev["psnr_editor"]  # two steps from a random DiT: the input is still closer
    saved = json.loads((out / "metrics.json").read_text())["last_eval"]
    assert saved["csim_editor"] == ev["csim_editor"]
    assert "mouth_psnr_editor" in ev  # the mouth-region numbers stay

    cheap = train_dubber(CONFIG, tiny(finished_run, tmp_path / "cheap", "phase=1", "loop.steps=1",
                                      "loop.eval_every=1", "loop.eval_at_start=false", "eval.metrics=[psnr]"))
    assert not any(k.startswith(("sync", "csim", "lmd")) for k in cheap["last_eval"])
    assert "psnr_editor" in cheap["last_eval"]


@pytest.fixture(scope="module")
def flashlips_pairs(tmp_path_factory):
    """Pairs of three demo videos at 96 px (tests/flashlips_corpus.py, as tests/test_flashlips_recipe.py)."""
    from factory.demo import SENTENCES
    from tests.flashlips_corpus import pair_manifest

    return pair_manifest(tmp_path_factory.mktemp("dm_pairs"), SENTENCES[:3], 96, "filters.identity.enabled=false")


@pytest.mark.slow  # builds a small pair manifest (about a minute), then short runs of both stages
def test_flashlips_eval_writes_the_measurement_metrics(flashlips_pairs, tmp_path):
    from factory.generators.latent_editor import LatentEditorGenerator
    from factory.trainers.dubbers import train_dubber

    stage1 = tmp_path / "stage1"
    LatentEditorGenerator.tiny(seed=0, resolution=64).save_pretrained(stage1)
    out = tmp_path / "run"
    common = [f"manifests=[{flashlips_pairs}]", f"init_from={stage1}", "loop.steps=2", "loop.eval_every=2",
              "loop.eval_at_start=false", "loop.progress=false", "eval_segments=2", "data.segment_frames=9"]
    m = train_dubber("configs/dubber_flashlips_cpu.yaml", [*common, f"loop.out={out}", SYNCNET_OVERRIDE])
    ev = m["last_eval"]
    for source in ("edit", "input"):
        for key in ("sync_c", "sync_d", "csim", "psnr"):  # CSIM with the default dlib embedder
            assert np.isfinite(ev[f"{key}_{source}"]), f"{key}_{source}"
    assert np.isfinite(ev["sync_c_real"]) and ev["lmd_frames"] + ev["lmd_skipped_frames"] > 0
    assert "mouth_l1_edit" in ev
    assert json.loads((out / "metrics.json").read_text())["last_eval"]["sync_d_edit"] == ev["sync_d_edit"]

    # the lip_flow stage dubs each held-out synthetic segment to its real audio with the dubber it exports
    flow = train_dubber("configs/dubber_flashlips_cpu.yaml",
                        [*common, "stage=lip_flow", f"init_from={out / 'final'}", f"loop.out={tmp_path / 'flow'}",
                         SYNCNET_OVERRIDE, "eval_metrics=[sync, csim, psnr]", "identity.backend=tiny"])
    ev = flow["last_eval"]
    for key in ("sync_c_dub", "sync_d_dub", "sync_c_input", "sync_c_real", "csim_dub", "psnr_dub", "psnr_input"):
        assert np.isfinite(ev[key]), key
    assert "pose_mse_sample" in ev and not any(k.startswith("lmd") for k in ev)

    # no SyncNet configured (the default): Sync is counted as skipped, never a number
    m = train_dubber("configs/dubber_flashlips_cpu.yaml", [*common, f"loop.out={tmp_path / 'nosync'}",
                                                           "eval_metrics=[sync]", "loop.steps=1", "loop.eval_every=1"])
    ev = m["last_eval"]
    assert ev["sync_skipped"] >= 1 and not any(k.startswith(("sync_c", "sync_d", "csim", "lmd")) for k in ev)


def test_flashlips_refuses_unknown_metrics(tmp_path):
    from factory.trainers.dubbers import load_recipe

    with pytest.raises(ConfigError, match="eval_metrics"):
        load_recipe("configs/dubber_flashlips_cpu.yaml", [f"manifests=[{tmp_path}]", "eval_metrics=[fvd]"])
