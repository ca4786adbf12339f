"""Every filter, in pipeline order: one `FilterSpec` entry each.

The pipeline builds the enabled filters from it, `factory refilter` re-judges recorded scores
with its thresholds, the model-path check asks it which local files a filter needs, and the
config schema gets a `filters.<name>` section per entry. Adding a filter = one new file in
filters/ that defines `SPEC`, plus its module name below. Third-party filters register a
`FilterSpec` under the `factory.filters` entry point group; they run after the built-in ones.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from factory.stage import FilterSpec, threshold_verdict

BUILT_IN = ("filters.real_clip", "filters.sync", "filters.alt_identity", "filters.mouth_distance",  # cheap first: no models
            "filters.identity", "filters.vlm_quality")


@lru_cache(maxsize=1)
def filter_specs() -> tuple[FilterSpec, ...]:
    specs = [importlib.import_module(name).SPEC for name in BUILT_IN]
    specs += [ep.load() for ep in sorted(entry_points(group="factory.filters"), key=lambda ep: ep.name)]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise RuntimeError(f"two filters share a name: {names}")
    return tuple(specs)


def enabled_filters(filters_cfg: Any) -> list[tuple[FilterSpec, Any]]:
    """(spec, settings) of every enabled filter, in pipeline order."""
    pairs = [(spec, getattr(filters_cfg, spec.name)) for spec in filter_specs()]
    return [(spec, settings) for spec, settings in pairs if settings.enabled]


def filter_thresholds(filters_cfg: Any) -> list[tuple[str, dict[str, tuple[str, float]]]]:
    """Every enabled filter's thresholds, in pipeline order, from settings alone (no models)."""
    return [(spec.name, spec.thresholds(settings)) for spec, settings in enabled_filters(filters_cfg)]


def judge(scores: dict[str, float], thresholds: list[tuple[str, dict]]) -> tuple[str | None, str | None]:
    """(reason, filter) of the first failing threshold, or (None, None) when the pair passes."""
    for name, rule in thresholds:
        reason = threshold_verdict(scores, rule)
        if reason:
            return reason, name
    return None, None
