"""`factory eval`: measure every item, write a JSON report, print a table.

JSON: `metrics` maps each number to {value, n, better} (value: the mean over items of the
item's number, or the set-level distance for FID/FVD); `skipped` maps each metric that did not
run to the reason; `items` lists every item's numbers. Infinite values are written as the
string "inf" (PSNR of identical clips), undefined ones as null: the file stays strict JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from factory.eval.inputs import eval_items
from factory.eval.registry import METRICS, build_metrics
from factory.eval.settings import EvalConfig
from factory.files import atomic_write


class NoItems(Exception):
    """Nothing matched: no generated video with a reference of the same name, or an empty manifest."""


def _mean(values: list[float]) -> float:
    defined = [v for v in values if not math.isnan(v)]
    return float(np.mean(defined)) if defined else float("nan")


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    metrics, skipped = build_metrics(cfg)
    unmatched: list[str] = []
    items: list[dict[str, Any]] = []
    for item in eval_items(cfg, unmatched):
        row: dict[str, Any] = {"name": item.name, "frames": len(item.generated)}
        for metric in metrics.values():
            row.update(metric.score(item))
        row["notes"] = item.notes
        items.append(row)
    if not items:
        raise NoItems("nothing to evaluate" + (f": {'; '.join(unmatched)}" if unmatched else ""))
    summary: dict[str, dict[str, Any]] = {}
    for name, metric in metrics.items():
        pooled = metric.pooled()
        for key, better in METRICS[name].values.items():
            if pooled is not None:
                summary[key] = {"value": pooled[key], "n": len(items), "better": better}
                continue
            values = [row[key] for row in items if key in row]
            summary[key] = {"value": _mean(values), "n": sum(not math.isnan(v) for v in values),
                            "better": better}
    source = ({"manifest": cfg.manifest} if cfg.manifest is not None else
              {"generated": cfg.generated, "reference": cfg.reference, "audio": cfg.audio})
    return {"inputs": source, "n_items": len(items), "metrics": summary, "skipped": skipped,
            "unmatched": unmatched, "items": items, "config": {k: v for k, v in vars(cfg).items()}}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return None if math.isnan(value) else ("inf" if value == math.inf else
                                               "-inf" if value == -math.inf else value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(_jsonable(report), indent=1, allow_nan=False))
    return path


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf"
    return f"{value:.4g}"


def format_table(report: dict[str, Any]) -> str:
    lines = [f"factory eval: {report['n_items']} item(s) from "
             + ", ".join(f"{k}={v}" for k, v in report["inputs"].items()),
             f"{'metric':<18} {'value':>10} {'n':>4}  better"]
    for key, m in report["metrics"].items():
        lines.append(f"{key:<18} {_fmt(m['value']):>10} {m['n']:>4}  {m['better']}")
    for name, note in report["skipped"].items():
        lines.append(f"{name:<18} {'skipped':>10}       {note}")
    for note in report["unmatched"]:
        lines.append(f"unmatched: {note}")
    return "\n".join(lines)
