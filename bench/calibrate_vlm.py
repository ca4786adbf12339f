"""Calibrate the VLM quality filter: does its score separate good pairs from broken ones?

Good pairs are the synthetic sides of a finished run's pairs. Each is broken four ways, inside the
re-rendered region only (the pair's mask; the canonical lower face when a sample has none), so
everything else stays the good pair's:
  blur        the region Gaussian-blurred (a generator that smears teeth and lips)
  seam        the region's colour and brightness shifted with a hard edge (a compositing seam)
  flicker     the region's brightness alternating frame to frame (temporal flicker)
  wrong_lips  the region of frame t taken from a shuffled frame (lips that jump, not follow speech)
Every variant is scored by the filter itself (its prompt, views and parser; soft mode, so scores
are kept whatever the threshold). Printed per group: the score distribution, the share kept at
`min_mean`, and the AUC of good vs that corruption (the chance a good pair outscores a broken
one; 0.5 is no separation). A malformed answer counts as score 0: the filter drops it.

Usage (real weights, on a GPU node):
  python bench/calibrate_vlm.py configs/gpu.yaml --run runs/gpu --pairs 64 \
      filters.vlm_quality.model_path=/models/Qwen2.5-VL-7B-Instruct
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from factory.payload import PairMedia  # noqa: E402
from factory.records import Record  # noqa: E402
from factory.vlm.quality import ASPECTS  # noqa: E402
from factory.vlm.views import CANONICAL_LOWER_FACE  # noqa: E402
from filters.vlm_quality import VLMQualityConfig, VLMQualityFilter  # noqa: E402

Pair = tuple[np.ndarray, np.ndarray | None]  # syn frames (T, S, S, 3) uint8, re-rendered region (S, S) or None


# -- corruptions: (frames, region, rng) -> frames, changed inside `region` only --------------------

def _inside(frames: np.ndarray, changed: np.ndarray, region: np.ndarray) -> np.ndarray:
    out = frames.copy()
    out[:, region] = np.clip(changed, 0, 255).astype(np.uint8)[:, region]
    return out


def blur(frames, region, rng):
    sigma = frames.shape[1] / 80  # ~3 px on a 256 crop: teeth and lip edges gone
    return _inside(frames, np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in frames]), region)


def seam(frames, region, rng):
    shift = np.array([22, -6, -18]) * rng.choice([-1, 1])  # a warmer or cooler patch, hard-edged
    return _inside(frames, frames.astype(int) + shift, region)


def flicker(frames, region, rng):
    gain = 1 + 0.14 * np.where(np.arange(len(frames)) % 2, 1, -1) * rng.uniform(0.7, 1.0, len(frames))
    return _inside(frames, frames * gain[:, None, None, None], region)


def wrong_lips(frames, region, rng):
    return _inside(frames, frames[rng.permutation(len(frames))], region)


CORRUPTIONS: dict[str, Callable] = {"blur": blur, "seam": seam, "flicker": flicker, "wrong_lips": wrong_lips}


def region_of(size: int, mask: np.ndarray | None) -> np.ndarray:
    """(S, S) bool: the pair's re-rendered region, or an ellipse in the canonical lower face."""
    if mask is not None and np.asarray(mask).any():
        return np.asarray(mask) > 0
    x1, y1, x2, y2 = (v * size for v in CANONICAL_LOWER_FACE)
    ellipse = np.zeros((size, size), np.uint8)
    cv2.ellipse(ellipse, (round((x1 + x2) / 2), round((y1 + y2) / 2)), (round((x2 - x1) / 2), round((y2 - y1) / 2)),
                0, 0, 360, 1, -1)
    return ellipse.astype(bool)


# -- scoring and the report ----------------------------------------------------------------------

def auc(good: list[float], bad: list[float]) -> float:
    """P(good > bad) + P(tie) / 2 over all pairs of one good and one bad score."""
    wins = [1.0 if g > b else 0.5 if g == b else 0.0 for g, b in itertools.product(good, bad)]
    return float(np.mean(wins)) if wins else float("nan")


def score(stage: VLMQualityFilter, groups: dict[str, list[Pair]], batch_size: int) -> dict[str, list[dict | None]]:
    """Per group, per pair: the filter's scores (`vlm_mean`, `vlm_<aspect>`) or None when malformed."""
    out = {}
    for name, pairs in groups.items():
        records = [Record(key=f"{name}{i}", kind="pair", meta={"fps": 25}, media=PairMedia(syn_frames=f, mask=m))
                   for i, (f, m) in enumerate(pairs)]
        scored = []
        for start in range(0, len(records), batch_size):
            for record in stage(records[start:start + batch_size]):
                scored.append(None if record.rejected else record.meta["scores"])  # malformed (or an error)
        out[name] = scored
    return out


def calibrate(cfg: VLMQualityConfig, pairs: list[Pair], seed: int = 0, logits_processor=None) -> dict:
    """Score `pairs` and their corrupted variants with the filter; the report as a dict."""
    rng = np.random.default_rng(seed)
    groups: dict[str, list[Pair]] = {"good": list(pairs)}
    for name, corrupt in CORRUPTIONS.items():
        groups[name] = [(corrupt(np.asarray(f), region_of(f.shape[1], m), rng), m) for f, m in pairs]
    stage = VLMQualityFilter(cfg, soft=True, logits_processor=logits_processor)
    try:
        scores = score(stage, groups, max(1, cfg.resources.batch_size))
    finally:
        stage.teardown()
    means = {name: [s["vlm_mean"] if s else 0.0 for s in group] for name, group in scores.items()}
    report = {"min_mean": cfg.min_mean, "groups": {}}
    for name, group in scores.items():
        values = np.asarray(means[name])
        ok = [s for s in group if s]
        report["groups"][name] = {
            "n": len(group), "malformed": len(group) - len(ok),
            "mean": float(values.mean()), "p10": float(np.percentile(values, 10)),
            "median": float(np.median(values)), "p90": float(np.percentile(values, 90)),
            "kept": float(np.mean(values > cfg.min_mean)),
            "aspects": {a: float(np.mean([s[f"vlm_{a}"] for s in ok])) if ok else None for a in ASPECTS},
            "auc_vs_good": None if name == "good" else auc(means["good"], means[name]),
        }
    return report


def format_report(report: dict) -> str:
    lines = [f"VLM quality calibration (keep when vlm_mean > {report['min_mean']}); malformed answers score 0",
             f"{'group':<11} {'n':>4} {'malf':>5} {'mean':>6} {'p10':>6} {'median':>6} {'p90':>6} {'kept':>6}"
             f" {'AUC':>6}  aspect means ({', '.join(a.split('_')[0][:5] for a in ASPECTS)})"]
    for name, g in report["groups"].items():
        aspects = " ".join("  -  " if v is None else f"{v:5.2f}" for v in g["aspects"].values())
        auc_text = "   -  " if g["auc_vs_good"] is None else f"{g['auc_vs_good']:6.3f}"
        lines.append(f"{name:<11} {g['n']:>4} {g['malformed']:>5} {g['mean']:6.2f} {g['p10']:6.2f} {g['median']:6.2f}"
                     f" {g['p90']:6.2f} {g['kept']:6.0%} {auc_text}  {aspects}")
    return "\n".join(lines)


def pairs_from_run(run: Path, limit: int) -> list[Pair]:
    from manifests.reader import iter_pairs

    pairs = []
    for sample in itertools.islice(iter_pairs(run / "manifest.json", augment=False), limit):
        mask = sample.get("mask")
        pairs.append((sample["syn"], None if mask is None else np.asarray(mask) > 0))
    return pairs


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="the factory config whose filters.vlm_quality settings to calibrate")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    parser.add_argument("--run", required=True, help="a finished run's output folder (its pairs are the good ones)")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from pipelines.settings import load_factory_config

    cfg = load_factory_config(args.config, args.overrides).filters.vlm_quality
    pairs = pairs_from_run(Path(args.run), args.pairs)
    if not pairs:
        raise SystemExit(f"{args.run} holds no pairs to calibrate on")
    report = calibrate(cfg, pairs, args.seed)
    print(format_report(report))
    return report


if __name__ == "__main__":
    main()
