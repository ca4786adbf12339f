"""Occluder grounding: ask the VLM what is in front of the lower face, and where.

Qwen2.5-VL grounds in its own format, a JSON list `[{"bbox_2d": [x1, y1, x2, y2], "label": ...}]`,
with ABSOLUTE pixel coordinates in the image the processor fed it, i.e. after smart_resize (sides
multiples of 28, pixel count bounded). `QwenVL.resized_hw` gives that size (it equals the
processor's `image_grid_thw[1:] * 14`), and the boxes are scaled back to the original frame.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from factory.metrics.frames import evenly_spaced
from factory.vlm.model import QwenVL
from factory.vlm.quality import RETRY_HINT, load_json_like

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in the original frame's pixels
MALFORMED = "occlusion_vlm_malformed"
GROUNDING_MAX_NEW_TOKENS = 160

GROUNDING_PROMPT = (
    "Is anything in front of this person's lower face (mouth, lips, chin or jaw), hiding part of "
    "it? For example a hand or fingers, a microphone, a cup, food, hair or a scarf. Glasses and "
    "things that do not cover the lower face do not count. Answer with only a JSON list, one item "
    'per occluder, in this format: [{"bbox_2d": [x1, y1, x2, y2], "label": "hand"}], with pixel '
    "coordinates in this image. Answer [] if nothing covers the lower face."
)


def top_level_spans(text: str) -> list[str]:
    """Balanced `[...]` and `{...}` substrings that are not nested in another one, in order."""
    pairs = {"[": "]", "{": "}"}
    spans, stack, start = [], [], 0
    for i, ch in enumerate(text):
        if ch in pairs:
            if not stack:
                start = i
            stack.append(pairs[ch])
        elif stack and ch == stack[-1]:
            stack.pop()
            if not stack:
                spans.append(text[start: i + 1])
    return spans


def as_item(item) -> tuple[str, tuple[float, ...]] | None:
    """(label, raw box) from one answer item, or None when it has no usable bbox_2d."""
    if not isinstance(item, dict):
        return None
    box = item.get("bbox_2d", item.get("bbox"))
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box):
        return None
    label = str(item.get("label") or "occluder").strip() or "occluder"
    return label, tuple(float(v) for v in box)


def rescale(box: tuple[float, ...], resized_hw: tuple[int, int], original_hw: tuple[int, int]) -> Box | None:
    """A box from the model's resized image to the original frame, widened to whole pixels (an
    occluder is kept, not painted over, so err on covering it), clipped; None when empty."""
    (rh, rw), (h, w) = resized_hw, original_hw
    x1, x2 = sorted(box[0::2])
    y1, y2 = sorted(box[1::2])
    if x2 <= x1 or y2 <= y1:  # a line or a point: nothing to keep
        return None
    x1, x2 = max(0, math.floor(x1 * w / rw)), min(w, math.ceil(x2 * w / rw))
    y1, y2 = max(0, math.floor(y1 * h / rh)), min(h, math.ceil(y2 * h / rh))
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def parse_boxes(text: str, resized_hw: tuple[int, int], original_hw: tuple[int, int]
                ) -> list[tuple[str, Box]] | None:
    """Labelled boxes in the original frame; [] when the model saw no occluder; None when the answer
    is malformed. One item without a usable box spoils the answer: an occluder that cannot be
    located must not be silently dropped (it would be painted over)."""
    for answer in map(load_json_like, top_level_spans(text)):
        answer = [answer] if isinstance(answer, dict) else answer  # a lone box, unwrapped
        if not isinstance(answer, list):
            continue
        items = [as_item(item) for item in answer]
        if any(item is None for item in items):
            continue
        boxes = [(label, rescale(box, resized_hw, original_hw)) for label, box in items]
        return [(label, box) for label, box in boxes if box is not None]
    return None


def probe_indices(num_frames: int, every: int | None) -> list[int]:
    """Frames to ask about: the first, the last, and evenly between them, never more than `every`
    frames apart (an occluder in view for that long is seen on a probe); None: the middle frame."""
    if every is None or num_frames <= 1:
        return [num_frames // 2]
    if every < 1:
        raise ValueError(f"probes must be at least 1 frame apart, got {every}")
    return evenly_spaced(num_frames, math.ceil((num_frames - 1) / every) + 1).tolist()


def ground_occluders(vlm: QwenVL, frames: np.ndarray, logits_processor=None,
                     max_new_tokens: int = GROUNDING_MAX_NEW_TOKENS,
                     probe_every: int | None = None) -> tuple[list[tuple[int, str, Box]], str | None]:
    """Occluder boxes as (frame index, label, box) on probe frames at most `probe_every` apart
    (None: the middle frame only), asked in one batch, and a rejection reason when the model answered nonsense twice for any probed frame
    (an occluder on an unchecked frame could be painted over)."""
    indices = probe_indices(len(frames), probe_every)
    found: dict[int, list[tuple[str, Box]]] = {}
    prompts = [GROUNDING_PROMPT, GROUNDING_PROMPT + RETRY_HINT]  # greedy: the retry must change the input
    for attempt, prompt in enumerate(prompts):
        todo = [i for i in indices if i not in found]
        images = [np.asarray(frames[i])[None] for i in todo]
        texts = vlm.chat(images, [prompt] * len(todo), max_new_tokens, logits_processor=logits_processor)
        for i, text in zip(todo, texts):
            original_hw = frames[i].shape[:2]
            boxes = parse_boxes(text, vlm.resized_hw(*original_hw), original_hw)
            if boxes is None:
                log.warning("occluder grounding: malformed answer on frame %d (attempt %d): %r", i, attempt + 1,
                            text[:200])
            else:
                found[i] = boxes
        if len(found) == len(indices):
            return [(i, label, box) for i in indices for label, box in found[i]], None
    return [], MALFORMED
