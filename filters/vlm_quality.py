"""VLM quality: Qwen2.5-VL rates the synthetic clip on six aspects (1-5), keep when the mean > 4.0.

The aspects are X-Dub's: image fidelity, aesthetic appeal, temporal stability, motion smoothness,
background and subject consistency. The model sees `frames` frames sampled evenly from the
synthetic clip, as a video. Scores are recorded as `vlm_<aspect>` and `vlm_mean`.

Batched: one `generate` call scores the whole batch (a VLM is worth batching, unlike the base
class's one `score` per record). An answer that does not parse is asked again once, with a
reminder, for the records that need it only; a second failure rejects the record with
`vlm_malformed_answer` (no scores to re-threshold, so never a soft mark).
"""

from __future__ import annotations

import logging

from dataclasses import dataclass, field

import numpy as np

from factory.devices import free_accelerator_memory
from factory.metrics.frames import evenly_spaced
from factory.records import Record
from factory.stage import Filter, FilterConfig, FilterSpec, ModelPath, Resources
from factory.vlm.quality import ASPECTS, QUALITY_PROMPT, RETRY_HINT, parse_quality

log = logging.getLogger(__name__)

MALFORMED = "vlm_malformed_answer"
CLIP_FPS = 25  # the factory's clip rate, when a record does not say


@dataclass
class VLMQualityConfig(FilterConfig):
    enabled: bool = False  # needs a local model
    model_path: str | None = None  # local Qwen2.5-VL folder (config, weights, tokenizer, processor)
    min_mean: float = 4.0  # keep when the mean of the six 1-5 aspect scores is above this
    frames: int = 8  # frames of the synthetic clip shown to the model
    max_pixels: int = 224 * 224  # per frame, after the processor's resize
    max_new_tokens: int = 160
    resources: Resources = field(default_factory=lambda: Resources(num_gpus=1.0, batch_size=4))


def vlm_quality_thresholds(cfg: VLMQualityConfig) -> dict[str, tuple[str, float]]:
    return {"vlm_mean": (">", cfg.min_mean)}


def vlm_quality_model_paths(cfg: VLMQualityConfig) -> list[ModelPath]:
    return [("model_path", cfg.model_path, "folder")]


def named_scores(aspects: dict[str, float]) -> dict[str, float]:
    scores = {f"vlm_{name}": value for name, value in aspects.items()}
    scores["vlm_mean"] = round(float(np.mean([aspects[name] for name in ASPECTS])), 4)
    return scores


class VLMQualityFilter(Filter):
    name = "vlm_quality"
    requires = ("syn_frames",)

    def __init__(self, cfg: VLMQualityConfig, soft: bool = False, logits_processor=None):
        super().__init__(vlm_quality_thresholds(cfg), cfg.resources, soft)
        self.cfg = cfg
        self.logits_processor = logits_processor  # for tests and constrained decoding

    def setup(self) -> None:
        from factory.vlm.model import QwenVL

        self.vlm = QwenVL(self.cfg.model_path, "filters.vlm_quality.model_path", max_pixels=self.cfg.max_pixels)

    def teardown(self) -> None:
        self.vlm = None
        free_accelerator_memory()

    def process(self, records: list[Record]) -> list[Record]:
        answers = self.ask(records, QUALITY_PROMPT)
        aspects = [parse_quality(a) for a in answers]
        malformed = [i for i, a in enumerate(aspects) if a is None]
        if malformed:  # once, batched, only the records that need it
            retried = self.ask([records[i] for i in malformed], QUALITY_PROMPT + RETRY_HINT)
            for i, answer in zip(malformed, retried):
                aspects[i] = parse_quality(answer)
                if aspects[i] is None:
                    log.warning("%s: malformed answer twice on %s: %r", self.name, records[i].key, answer[:200])
        return [self.judge(record, named_scores(a)) if a is not None else record.reject(MALFORMED, self.name)
                for record, a in zip(records, aspects)]

    def ask(self, records: list[Record], prompt: str) -> list[str]:
        clips, fps = [], []
        for record in records:
            frames = record.media.syn_frames
            idx = evenly_spaced(len(frames), self.cfg.frames)
            clips.append(frames[idx])
            fps.append(record.meta.get("fps", CLIP_FPS) * len(idx) / len(frames))
        return self.vlm.chat(clips, [prompt] * len(records), self.cfg.max_new_tokens,
                             logits_processor=self.logits_processor, fps=fps)


SPEC = FilterSpec("vlm_quality", VLMQualityConfig, VLMQualityFilter, vlm_quality_thresholds, vlm_quality_model_paths)
