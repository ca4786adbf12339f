"""bench/calibrate_vlm.py: the corruptions touch only the re-rendered region, and the calibration
runs end to end through the real filter on the tiny random Qwen2.5-VL."""

from __future__ import annotations

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest

from bench.calibrate_vlm import CORRUPTIONS, auc, calibrate, format_report, region_of
from factory.stage import Resources
from factory.vlm.quality import ASPECTS
from filters.vlm_quality import VLMQualityConfig
from tests.tiny_qwen import ForceText, tiny_qwen_path  # noqa: F401  (fixture)

T, S = 8, 64


def good_pairs(n: int) -> list[tuple[np.ndarray, np.ndarray | None]]:
    from skimage import data

    face = cv2.resize(data.astronaut()[:256, 96:352], (S, S), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    mask = np.zeros((S, S), bool)
    mask[36:58, 18:46] = True
    frames = [np.clip(face[None].astype(int) + rng.integers(-3, 4, (T, S, S, 3)), 0, 255).astype(np.uint8)
              for _ in range(n)]
    for clip in frames:  # lips that open and close
        for t, frame in enumerate(clip):
            cv2.ellipse(frame, (32, 47), (9, 1 + 3 * t % 7), 0, 0, 360, (90, 20, 30), -1)
    return [(f, mask if i % 2 == 0 else None) for i, f in enumerate(frames)]  # with and without a mask


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_changes_the_region_only_and_is_seeded(name):
    frames, mask = good_pairs(1)[0]
    region = region_of(S, mask)
    out = CORRUPTIONS[name](frames, region, np.random.default_rng(1))
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert np.array_equal(out[:, ~region], frames[:, ~region])
    assert np.abs(out[:, region].astype(int) - frames[:, region]).mean() > 2
    assert np.array_equal(out, CORRUPTIONS[name](frames, region, np.random.default_rng(1)))


def test_region_without_a_mask_is_the_canonical_lower_face():
    region = region_of(256, None)
    ys, xs = np.nonzero(region)
    assert ys.min() >= 120 and abs(xs.mean() - 130) < 5 and 0.1 < region.mean() < 0.4


def test_auc_on_hand_computed_scores():
    assert auc([5, 4], [3, 3]) == 1.0 and auc([3], [5]) == 0.0 and auc([4, 4], [4, 4]) == 0.5
    assert auc([5, 3], [4]) == 0.5


@pytest.fixture()
def cfg(tiny_qwen_path) -> VLMQualityConfig:  # noqa: F811
    return VLMQualityConfig(enabled=True, model_path=tiny_qwen_path, runs=2, run_length=2, max_pixels=56 * 56,
                            max_new_tokens=24, resources=Resources(num_gpus=0, batch_size=4))


def test_calibration_runs_end_to_end_on_the_tiny_model(cfg):
    report = calibrate(cfg, good_pairs(2))
    print(format_report(report))
    assert list(report["groups"]) == ["good", *CORRUPTIONS]
    for name, group in report["groups"].items():
        assert group["n"] == 2 and 0 <= group["malformed"] <= 2 and 0.0 <= group["kept"] <= 1.0
        assert (group["auc_vs_good"] is None) == (name == "good") or 0.0 <= group["auc_vs_good"] <= 1.0
    assert "wrong_lips" in format_report(report)


def test_calibration_scores_through_the_filter(cfg, tiny_qwen_path):  # noqa: F811
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen_path, local_files_only=True)
    answer = dict(zip(ASPECTS, [5, 4, 5, 4, 5, 4]))  # a model that cannot tell: every pair 4.5
    report = calibrate(replace(cfg, max_new_tokens=160), good_pairs(2),
                       logits_processor=ForceText(tokenizer, json.dumps(answer)))
    for name, group in report["groups"].items():
        assert group["malformed"] == 0 and group["mean"] == 4.5 and group["kept"] == 1.0
        assert group["aspects"]["temporal_stability"] == 5.0
        assert group["auc_vs_good"] == (None if name == "good" else 0.5)  # no separation, measured as such
