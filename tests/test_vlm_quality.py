"""The VLM quality filter: the answer parser, and the filter end to end through a tiny random
Qwen2.5-VL whose output is forced (`ForceText`), so the real prompt/processor/generate path runs."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest

from factory.payload import PairMedia
from factory.stage import Resources
from filters.vlm_quality import VLMQualityConfig
from factory.records import Record
from factory.stage import threshold_verdict
from factory.vlm.quality import ASPECTS, parse_quality
from filters.vlm_quality import MALFORMED, VLMQualityFilter, vlm_quality_thresholds
from tests.tiny_qwen import ForceText, tiny_qwen_path  # noqa: F401  (fixture)

GOOD = dict(zip(ASPECTS, [5, 4, 5, 4, 5, 4]))  # mean 4.5
POOR = dict(zip(ASPECTS, [3, 3, 2, 4, 3, 3]))  # mean 3.0


# -- the parser -----------------------------------------------------------------------------------

def test_parse_quality_well_formed():
    assert parse_quality(json.dumps(GOOD)) == {k: float(v) for k, v in GOOD.items()}


@pytest.mark.parametrize("wrap", ["```json\n%s\n```", "Sure! Here are my ratings:\n%s\nThe mouth looks fine.",
                                  "```\n%s```"])
def test_parse_quality_digs_the_object_out(wrap):
    assert parse_quality(wrap % json.dumps(GOOD, indent=2)) == {k: float(v) for k, v in GOOD.items()}


def test_parse_quality_tolerates_single_quotes_spaces_and_case():
    text = "{'Image Fidelity': 5, 'aesthetic_appeal' : '4', 'temporal-stability': 5, 'motion_smoothness': 4.0," \
           " 'background_consistency': 5, 'subject_consistency': 4, 'comment': 'ok'}"
    assert parse_quality(text) == {k: float(v) for k, v in GOOD.items()}


def test_parse_quality_takes_the_first_complete_object():
    assert parse_quality('{"note": 1} then ' + json.dumps(POOR))["temporal_stability"] == 2.0


@pytest.mark.parametrize("text", [
    "",
    "The video looks great, 5/5.",
    json.dumps({k: v for k, v in GOOD.items() if k != "subject_consistency"}),  # missing key
    json.dumps({**GOOD, "image_fidelity": 6}),  # above the scale
    json.dumps({**GOOD, "image_fidelity": 0}),  # below the scale
    json.dumps({**GOOD, "image_fidelity": "good"}),  # not a number
    json.dumps({**GOOD, "image_fidelity": True}),  # a bool is no score
    json.dumps({**GOOD, "image_fidelity": None}),
    '{"image_fidelity": 5, "aesthetic_appeal": ',  # cut off by max_new_tokens
])
def test_parse_quality_rejects_malformed(text):
    assert parse_quality(text) is None


def test_thresholds_need_no_model():
    assert vlm_quality_thresholds(VLMQualityConfig(min_mean=3.5)) == {"vlm_mean": (">", 3.5)}


# -- end to end through the tiny model ------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizer(tiny_qwen_path):  # noqa: F811
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_qwen_path, local_files_only=True)


@pytest.fixture()
def cfg(tiny_qwen_path) -> VLMQualityConfig:  # noqa: F811
    return VLMQualityConfig(enabled=True, model_path=tiny_qwen_path, runs=2, run_length=4, max_pixels=56 * 56,
                            max_new_tokens=160, resources=Resources(num_gpus=0, batch_size=4))


def pairs(n: int, frames: int = 8, size: int = 64) -> list[Record]:
    rng = np.random.default_rng(n)
    return [Record(key=f"pair{i}", kind="pair", meta={"fps": 25},
                   media=PairMedia(syn_frames=rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)))
            for i in range(n)]


def test_good_answer_is_kept_with_scores(cfg, tokenizer):
    force = ForceText(tokenizer, json.dumps(GOOD))
    out = VLMQualityFilter(cfg, logits_processor=force)(pairs(3))
    assert [r.rejected for r in out] == [None] * 3
    for r in out:
        assert r.meta["scores"] == {**{f"vlm_{k}": float(v) for k, v in GOOD.items()}, "vlm_mean": 4.5}
    assert force.calls == 1 and force.batch_sizes == [3]  # the batch is one generate call


def test_poor_answer_is_rejected_by_the_mean(cfg, tokenizer):
    stage = VLMQualityFilter(cfg, logits_processor=ForceText(tokenizer, json.dumps(POOR)))
    out = stage(pairs(2))
    reason = threshold_verdict({"vlm_mean": 3.0}, vlm_quality_thresholds(cfg))
    assert reason == "vlm_mean_below_4"
    assert [r.rejected for r in out] == [reason] * 2
    assert all(r.meta["rejected_by"] == "vlm_quality" and r.meta["scores"]["vlm_mean"] == 3.0 for r in out)
    assert stage.stats[f"dropped_{reason}"] == 2


def test_soft_mode_marks_instead_of_rejecting(cfg, tokenizer):
    stage = VLMQualityFilter(cfg, logits_processor=ForceText(tokenizer, json.dumps(POOR)))
    stage.soft = True
    (record,) = stage(pairs(1))
    assert record.rejected is None and record.filtered == "vlm_mean_below_4"


def test_malformed_answer_is_retried_once_then_rejected(cfg, tokenizer):
    force = ForceText(tokenizer, "I cannot rate this video.")
    stage = VLMQualityFilter(cfg, logits_processor=force)
    out = stage(pairs(2))
    assert force.calls == 2 and force.batch_sizes == [2, 2]
    assert [r.rejected for r in out] == [MALFORMED] * 2
    assert "scores" not in out[0].meta and stage.stats[f"dropped_{MALFORMED}"] == 2


def test_retry_asks_only_the_malformed_records(cfg, tokenizer):
    good, bad = json.dumps(GOOD), "{'image_fidelity': 5"
    force = ForceText(tokenizer, [good, bad, bad], [good, bad])  # the retry: record 1 recovers, record 2 not
    out = VLMQualityFilter(cfg, logits_processor=force)(pairs(3))
    assert force.batch_sizes == [3, 2]
    assert [r.rejected for r in out] == [None, None, MALFORMED]
    assert out[1].meta["scores"]["vlm_mean"] == 4.5


def spy_chat(stage: VLMQualityFilter) -> list[tuple[list, str]]:
    """Records what the filter shows the model (clips and prompt per record); the model still runs."""
    stage.ensure_set_up()
    seen, chat = [], stage.vlm.chat

    def recording(clips, prompts, *args, **kwargs):
        seen.extend(zip(clips, prompts))
        return chat(clips, prompts, *args, **kwargs)

    stage.vlm.chat = recording
    return seen


def test_the_prompt_is_a_schema_with_no_example_values(cfg, tokenizer):
    stage = VLMQualityFilter(cfg, logits_processor=ForceText(tokenizer, "not json", json.dumps(GOOD)))
    seen = spy_chat(stage)
    stage(pairs(1))
    for _, prompt in seen:  # the first question and the retry
        assert parse_quality(prompt) is None  # a model that copies the prompt gives no score, not 4s
        assert "{" not in prompt and "}" not in prompt  # no example object to copy
        assert set(re.findall(r"\d+", prompt)) <= {"1", "5", "2"}  # the scale's ends, the number of videos
        assert all(aspect in prompt for aspect in ASPECTS) and "integer" in prompt


def test_the_model_sees_runs_of_consecutive_frames_cropped_to_the_mouth(cfg, tokenizer):
    T, S = 40, 128
    frames = np.zeros((T, S, S, 3), np.uint8)
    frames[..., 0] = (np.arange(T) * 6)[:, None, None]  # red encodes the frame index
    mask = np.zeros((S, S), np.uint8)
    mask[70:110, 40:90] = 1  # the re-rendered region, lower face
    frames[:, 70:110, 40:90, 1] = 255  # green marks it
    record = Record(key="p", kind="pair", meta={"fps": 25}, media=PairMedia(syn_frames=frames, mask=mask))
    stage = VLMQualityFilter(replace(cfg, runs=3, run_length=4, max_pixels=112 * 112),
                             logits_processor=ForceText(tokenizer, json.dumps(GOOD)))
    seen = spy_chat(stage)
    stage([record])
    (views, prompt), = seen
    assert len(views) == 3 and "3 short videos" in prompt
    firsts = []
    for view in views:
        assert view.shape == (4, 112, 112, 3)  # enlarged crop (50 x 40 px region + margin)
        index = view[:, 56, 56, 0].astype(int) // 6
        assert index.tolist() == list(range(index[0], index[0] + 4))  # consecutive frames
        firsts.append(int(index[0]))
        assert view[..., 1].mean() > 0.35 * 255  # the region fills the view (the whole frame: 12 %)
    assert firsts[0] == 0 and firsts[-1] == T - 4 and firsts == sorted(firsts)  # start to end of the clip


def test_without_a_mask_the_view_is_the_canonical_lower_face():
    from factory.vlm.views import mouth_box, run_starts

    x1, y1, x2, y2 = mouth_box(256, None, 0.05)
    assert x2 - x1 == y2 - y1 and 0 <= x1 and y2 <= 256 and y1 > 64  # square, inside, below the eyes
    assert run_starts(77, 4, 8) == [0, 23, 46, 69] and run_starts(8, 4, 8) == [0] and run_starts(20, 4, 8) == [0, 12]


def test_random_model_output_does_not_crash(cfg):
    stage = VLMQualityFilter(replace(cfg, max_new_tokens=24))
    out = stage(pairs(2))
    for r in out:  # almost surely malformed; in any case a verdict, never a stage error
        assert r.rejected in (None, MALFORMED, "vlm_mean_below_4") and "error" not in (r.rejected or "")


def test_chat_batches_images_and_videos_of_different_prompt_lengths(tiny_qwen_path, tokenizer):  # noqa: F811
    from factory.vlm.model import QwenVL

    vlm = QwenVL(tiny_qwen_path, "filters.vlm_quality.model_path")
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(1, 90, 120, 3), (6, 64, 64, 3)]]
    answers = ['[{"bbox_2d": [1, 2, 3, 4], "label": "hand"}]', json.dumps(GOOD)]
    out = vlm.chat(clips, ["short", "a much longer prompt than the first one"], 64,
                   logits_processor=ForceText(tokenizer, answers), fps=[2.0, 12.5])
    assert out == answers  # left padding: each row's new tokens decode to exactly its answer


def test_missing_model_path_names_the_config_key(tmp_path):
    from factory.vlm.model import QwenVL

    for path in (None, str(tmp_path / "absent")):
        with pytest.raises(FileNotFoundError, match="filters.vlm_quality.model_path"):
            QwenVL(path, "filters.vlm_quality.model_path")
    stage = VLMQualityFilter(VLMQualityConfig(enabled=True, model_path=None))
    with pytest.raises(FileNotFoundError, match="filters.vlm_quality.model_path"):
        stage(pairs(1))
