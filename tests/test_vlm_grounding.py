"""Occluder grounding: the box parser and its rescaling to the original frame, and
`ground_occluders` end to end through a tiny random Qwen2.5-VL with forced answers."""

from __future__ import annotations

import numpy as np
import pytest

from factory.vlm.grounding import MALFORMED, parse_boxes, ground_occluders
from tests.tiny_qwen import ForceText, tiny_qwen_path  # noqa: F401  (fixture)

ORIGINAL = (100, 150)  # (H, W) of the frame
RESIZED = (112, 140)  # smart_resize(100, 150) with the default bounds: sides multiples of 28
HAND = '[{"bbox_2d": [28, 56, 70, 112], "label": "hand"}]'
HAND_IN_FRAME = ("hand", (30, 50, 75, 100))  # x * 150/140, y * 100/112, exactly


# -- the parser -----------------------------------------------------------------------------------

def test_box_is_rescaled_exactly():
    assert parse_boxes(HAND, RESIZED, ORIGINAL) == [HAND_IN_FRAME]


def test_fractional_boxes_widen_to_whole_pixels():
    # x1 = 29 * 150/140 = 31.07 -> 31, x2 = 71 * 150/140 = 76.07 -> 77 (an occluder is kept whole)
    assert parse_boxes('[{"bbox_2d": [29, 57, 71, 100], "label": "mic"}]', RESIZED, ORIGINAL) == [
        ("mic", (31, 50, 77, 90))]


@pytest.mark.parametrize("wrap", ["```json\n%s\n```", "There is a hand in front of the mouth: %s (one occluder).",
                                  "Occluders [see below]:\n%s"])
def test_parse_boxes_digs_the_list_out(wrap):
    assert parse_boxes(wrap % HAND, RESIZED, ORIGINAL) == [HAND_IN_FRAME]


def test_parse_boxes_single_quotes_and_a_bare_object():
    assert parse_boxes("[{'bbox_2d': [28, 56, 70, 112], 'label': 'hand'}]", RESIZED, ORIGINAL) == [HAND_IN_FRAME]
    assert parse_boxes('{"bbox_2d": [28, 56, 70, 112], "label": "hand"}', RESIZED, ORIGINAL) == [HAND_IN_FRAME]


def test_no_occluder_is_an_empty_list():
    assert parse_boxes("[]", RESIZED, ORIGINAL) == []
    assert parse_boxes("```json\n[]\n```", RESIZED, ORIGINAL) == []


def test_boxes_are_clipped_sorted_and_degenerate_ones_dropped():
    text = ('[{"bbox_2d": [-20, -5, 200, 300], "label": "cup"}, {"bbox_2d": [70, 112, 28, 56], "label": "hand"},'
            ' {"bbox_2d": [150, 10, 160, 20], "label": "outside"}, {"bbox_2d": [40, 40, 40, 60]}]')
    assert parse_boxes(text, RESIZED, ORIGINAL) == [("cup", (0, 0, 150, 100)), HAND_IN_FRAME]


def test_missing_label_is_named_occluder():
    assert parse_boxes('[{"bbox_2d": [28, 56, 70, 112]}]', RESIZED, ORIGINAL) == [("occluder", (30, 50, 75, 100))]


@pytest.mark.parametrize("text", [
    "",
    "A hand covers the mouth.",
    "None",
    '[{"label": "hand"}]',  # no box
    '[{"bbox_2d": [1, 2, 3], "label": "hand"}]',  # three numbers
    '[{"bbox_2d": ["a", 2, 3, 4], "label": "hand"}]',
    '[{"bbox_2d": [1, 2, 3, 4], "label": "hand"}, "a microphone"]',  # one unlocatable occluder spoils it
    '[{"bbox_2d": [28, 56, 70, 112], "label": "hand"',  # cut off
    "[1, 2, 3, 4]",
])
def test_parse_boxes_rejects_malformed(text):
    assert parse_boxes(text, RESIZED, ORIGINAL) is None


# -- end to end through the tiny model ------------------------------------------------------------

@pytest.fixture(scope="module")
def vlm(tiny_qwen_path):  # noqa: F811
    from factory.vlm.model import QwenVL

    return QwenVL(tiny_qwen_path, "occlusion.vlm_path")


def clip(frames: int = 5) -> np.ndarray:
    return np.random.default_rng(frames).integers(0, 256, (frames, *ORIGINAL, 3), dtype=np.uint8)


def test_resized_size_is_what_the_model_saw(vlm, monkeypatch):
    seen = {}
    generate = vlm.model.generate

    def spy(**inputs):
        seen["grid"] = inputs["image_grid_thw"].tolist()
        return generate(**inputs)

    monkeypatch.setattr(vlm.model, "generate", spy)
    vlm.chat([clip(1)], ["where?"], 1)
    (_, gh, gw), = seen["grid"]
    assert vlm.resized_hw(*ORIGINAL) == RESIZED == (gh * 14, gw * 14)


def test_forced_box_comes_back_in_frame_pixels(vlm):
    force = ForceText(vlm.processor.tokenizer, HAND)
    assert ground_occluders(vlm, clip(), logits_processor=force) == ([(2, *HAND_IN_FRAME)], None)
    assert force.calls == 1 and force.batch_sizes == [1]  # one frame, one question


def test_forced_empty_list_means_no_occluder(vlm):
    assert ground_occluders(vlm, clip(), logits_processor=ForceText(vlm.processor.tokenizer, "[]")) == ([], None)


def test_garbage_twice_gives_the_malformed_reason(vlm):
    force = ForceText(vlm.processor.tokenizer, "there might be a hand somewhere")
    assert ground_occluders(vlm, clip(), logits_processor=force) == ([], MALFORMED)
    assert force.calls == 2


def test_retry_can_recover(vlm):
    force = ForceText(vlm.processor.tokenizer, "no idea", HAND)
    assert ground_occluders(vlm, clip(), logits_processor=force) == ([(2, *HAND_IN_FRAME)], None)
    assert force.calls == 2


def test_random_model_output_does_not_crash(vlm):
    boxes, reason = ground_occluders(vlm, clip(), max_new_tokens=24)
    assert reason in (None, MALFORMED) and isinstance(boxes, list)


def test_several_probe_frames_in_one_batch_and_only_malformed_ones_retried(vlm):
    force = ForceText(vlm.processor.tokenizer, ["[]", HAND, "a hand, maybe"], [HAND])
    found, reason = ground_occluders(vlm, clip(), logits_processor=force, probe_every=2)
    assert reason is None and found == [(2, *HAND_IN_FRAME), (4, *HAND_IN_FRAME)]  # probes 0, 2 and 4
    assert force.batch_sizes == [3, 1]


def test_probes_are_at_most_probe_every_frames_apart(vlm):
    from factory.vlm.grounding import probe_indices

    for frames in (2, 25, 26, 60, 77, 250):
        probes = probe_indices(frames, 25)
        assert probes[0] == 0 and probes[-1] == frames - 1 and max(b - a for a, b in zip(probes, probes[1:])) <= 25
    assert probe_indices(77, 25) == [0, 19, 38, 57, 76] and probe_indices(77, None) == [38]
    force = ForceText(vlm.processor.tokenizer, "[]")  # a 60-frame clip: 4 probes in one batch
    assert ground_occluders(vlm, clip(60), logits_processor=force, probe_every=25) == ([], None)
    assert force.batch_sizes == [4]
