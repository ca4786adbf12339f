"""Every enabled filter's thresholds, in pipeline order, computed from a config alone (no models):
the pipeline and `factory refilter` judge recorded scores with the same rules."""

from __future__ import annotations

from factory.config import FiltersConfig
from factory.stage import threshold_verdict

FILTER_ORDER = ("mouth_distance", "identity", "vlm_quality")


def filter_thresholds(cfg: FiltersConfig) -> list[tuple[str, dict[str, tuple[str, float]]]]:
    return [(name, _rule(name)(getattr(cfg, name))) for name in FILTER_ORDER if getattr(cfg, name).enabled]


def _rule(name: str):
    if name == "mouth_distance":
        from filters.mouth_distance import mouth_distance_thresholds as rule
    elif name == "identity":
        from filters.identity import identity_thresholds as rule
    else:
        from filters.vlm_quality import vlm_quality_thresholds as rule
    return rule


def judge(scores: dict[str, float], thresholds: list[tuple[str, dict]]) -> tuple[str | None, str | None]:
    """(reason, filter) of the first failing threshold, or (None, None) when the pair passes."""
    for name, rule in thresholds:
        reason = threshold_verdict(scores, rule)
        if reason:
            return reason, name
    return None, None
