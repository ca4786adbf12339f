"""A tiny random-weight Qwen2.5-VL folder, built offline in seconds, and `ForceText`, a logits
processor that makes `generate` emit a chosen answer. Together they run the real code path
(chat template, qwen-vl-utils, processor, vision tower, generate, decode) with controlled output.

Fixture: `tiny_qwen_path` (session scope) is the folder; import it into a test module
(`from tests.tiny_qwen import tiny_qwen_path`) and load it with `QwenVL(path, key)`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LogitsProcessor

from factory.vlm.quality import ASPECTS

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]

# Qwen2-VL's own template: a default system turn, then one vision placeholder per image/video.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Enough text that BPE learns the words the prompts and answers use (the byte alphabet covers the rest).
CORPUS = [
    "You are a helpful assistant. system user assistant",
    '{"image_fidelity": 5, "aesthetic_appeal": 4, "temporal_stability": 3}',
    "{'bbox_2d': [12, 34, 56, 78], 'label': 'hand'} [] ```json ``` microphone glasses hand cup",
    " ".join(ASPECTS), "0 1 2 3 4 5 6 7 8 9 10 100 1000, : ; [ ] { } \" ' ` - _ . \n",
    "Rate this talking-head video clip. Answer with a JSON object with exactly these keys, "
    "each an integer from 1 (bad) to 5 (excellent). Is anything in front of the face, the mouth "
    "or the chin? Give each occluder as a bounding box in pixel coordinates.",
]


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=SPECIAL_TOKENS[1:], padding_side="left")


def build_tiny_qwen(folder: str | Path) -> Path:
    """Save a tiny Qwen2.5-VL (tokenizer, processors, chat template, random weights) to `folder`."""
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    folder = Path(folder)
    tokenizer = build_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    pixels = {"min_pixels": 4 * 28 * 28, "max_pixels": 224 * 224}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixels),
        video_processor=Qwen2VLVideoProcessor(**pixels, cap_pixels_per_frame=True),
        tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(folder)

    hidden, heads, mrope_section = 64, 4, [2, 3, 3]
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=heads, num_key_value_heads=2, max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": mrope_section},
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,  # feeds the LM
            fullatt_block_indexes=[1], window_size=112, patch_size=14, temporal_patch_size=2,
            spatial_merge_size=2, tokens_per_second=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    # mrope splits the rotary half of each head into (time, height, width) sections
    assert 2 * sum(mrope_section) == hidden // heads
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(folder)
    return folder


_built: dict[str, str] = {}


@pytest.fixture(scope="session")
def tiny_qwen_path(tmp_path_factory) -> str:
    """The tiny model's folder, built once per session even when several test modules import this."""
    if "path" not in _built:
        _built["path"] = str(build_tiny_qwen(tmp_path_factory.mktemp("tiny_qwen")))
    return _built["path"]


class ForceText(LogitsProcessor):
    """Forces `generate` to emit chosen answers, then EOS: the "controlled model output".

    `answers` holds one entry per `generate` call (the last one repeats): a string for every row,
    or a list with one string per row. `calls` and `batch_sizes` record what was asked.
    """

    def __init__(self, tokenizer, *answers: str | list[str]):
        self.tokenizer, self.answers = tokenizer, answers
        self.eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.calls, self.batch_sizes = 0, []
        self._seen = None  # the ids of the previous step: a step extends them by one token

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        seen, self._seen = self._seen, input_ids.clone()
        if seen is None or seen.shape != input_ids[:, :-1].shape or not torch.equal(seen, input_ids[:, :-1]):
            self._start = input_ids.shape[1]  # a new generate call
            self._targets = self._encode(self.answers[min(self.calls, len(self.answers) - 1)], len(input_ids))
            self.calls += 1
            self.batch_sizes.append(len(input_ids))
        step = input_ids.shape[1] - self._start
        forced = torch.full_like(scores, float("-inf"))
        for row, target in enumerate(self._targets):
            forced[row, target[step] if step < len(target) else self.eos] = 0.0
        return forced

    def _encode(self, answer: str | list[str], rows: int) -> list[list[int]]:
        texts = [answer] * rows if isinstance(answer, str) else list(answer)
        assert len(texts) == rows, f"ForceText got {len(texts)} answers for {rows} rows"
        return [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
