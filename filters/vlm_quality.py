"""VLM quality: Qwen2.5-VL rates the synthetic clip on six aspects (1-5), keep when the mean > 4.0.

The aspects are X-Dub's: image fidelity, aesthetic appeal, temporal stability, motion smoothness,
background and subject consistency. The model sees `runs` short runs of `run_length` consecutive
frames of the synthetic clip, spread over it, each cropped to the mouth region and enlarged
(`factory.vlm.views` says why). Scores are recorded as `vlm_<aspect>` and `vlm_mean`.

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
from factory.records import Record
from factory.stage import Filter, FilterConfig, FilterSpec, ModelPath, Resources
from factory.vlm.quality import ASPECTS, RETRY_HINT, parse_quality, quality_prompt
from factory.vlm.views import quality_views

log = logging.getLogger(__name__)

MALFORMED = "vlm_malformed_answer"
CLIP_FPS = 25  # the factory's clip rate, when a record does not say


@dataclass
class VLMQualityConfig(FilterConfig):
    enabled: bool = False  # needs a local model
    model_path: str | None = None  # local Qwen2.5-VL folder (config, weights, tokenizer, processor)
    min_mean: float = 4.0  # keep when the mean of the six 1-5 aspect scores is above this
    runs: int = 4  # short runs of consecutive frames, spread over the clip (start ... end)
    run_length: int = 8  # consecutive frames per run (even: the VLM pairs frames in time)
    crop_margin: float = 0.08  # around the re-rendered region, a share of the crop side
    max_pixels: int = 224 * 224  # per frame of the mouth crop (scaled up to it)
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
        answers = self.ask(records)
        aspects = [parse_quality(a) for a in answers]
        malformed = [i for i, a in enumerate(aspects) if a is None]
        if malformed:  # once, batched, only the records that need it
            retried = self.ask([records[i] for i in malformed], retry=True)
            for i, answer in zip(malformed, retried):
                aspects[i] = parse_quality(answer)
                if aspects[i] is None:
                    log.warning("%s: malformed answer twice on %s: %r", self.name, records[i].key, answer[:200])
        return [self.judge(record, named_scores(a)) if a is not None else record.reject(MALFORMED, self.name)
                for record, a in zip(records, aspects)]

    def ask(self, records: list[Record], retry: bool = False) -> list[str]:
        clips = [quality_views(r.media.syn_frames, r.media.mask, self.cfg.runs, self.cfg.run_length,
                               self.cfg.crop_margin, self.cfg.max_pixels) for r in records]
        prompts = [quality_prompt(len(views)) + (RETRY_HINT if retry else "") for views in clips]
        fps = [float(r.meta.get("fps", CLIP_FPS)) for r in records]  # consecutive frames: the clip's own rate
        return self.vlm.chat(clips, prompts, self.cfg.max_new_tokens,
                             logits_processor=self.logits_processor, fps=fps)


SPEC = FilterSpec("vlm_quality", VLMQualityConfig, VLMQualityFilter, vlm_quality_thresholds, vlm_quality_model_paths)
