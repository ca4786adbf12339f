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

import numpy as np

from factory.config import VLMQualityConfig
from factory.metrics.frames import evenly_spaced
from factory.records import Record
from factory.stage import Filter, Resources
from factory.vlm.quality import ASPECTS, QUALITY_PROMPT, RETRY_HINT, parse_quality

log = logging.getLogger(__name__)

MALFORMED = "vlm_malformed_answer"
CLIP_FPS = 25  # the factory's clip rate, when a record does not say


def vlm_quality_thresholds(cfg: VLMQualityConfig) -> dict[str, tuple[str, float]]:
    return {"vlm_mean": (">", cfg.min_mean)}


def named_scores(aspects: dict[str, float]) -> dict[str, float]:
    scores = {f"vlm_{name}": value for name, value in aspects.items()}
    scores["vlm_mean"] = round(float(np.mean([aspects[name] for name in ASPECTS])), 4)
    return scores


class VLMQualityFilter(Filter):
    name = "vlm_quality"

    def __init__(self, cfg: VLMQualityConfig, logits_processor=None):
        super().__init__(vlm_quality_thresholds(cfg), Resources(
            num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, batch_size=cfg.batch_size, pool_size=cfg.pool_size))
        self.cfg = cfg
        self.logits_processor = logits_processor  # for tests and constrained decoding

    def setup(self) -> None:
        from factory.vlm.model import QwenVL

        self.vlm = QwenVL(self.cfg.model_path, "filters.vlm_quality.model_path", max_pixels=self.cfg.max_pixels)

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
            frames = record.media["syn_frames"]
            idx = evenly_spaced(len(frames), self.cfg.frames)
            clips.append(frames[idx])
            fps.append(record.meta.get("fps", CLIP_FPS) * len(idx) / len(frames))
        return self.vlm.chat(clips, [prompt] * len(records), self.cfg.max_new_tokens,
                             logits_processor=self.logits_processor, fps=fps)
