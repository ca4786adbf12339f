"""`factory refine CONFIG [key=value ...]`: FlashLips self-refinement rounds over an existing clip store.

Each round r works in OUT/round_r/:

    pairs/    `factory pairs` over `clip_stores` (no re-ingest) with the round's generator: round 0's
              is `generator_weights` (a latent_editor folder from `factory train-generator`), or
              transplant when that is null; round r > 0's is round r-1's refined editor
    editor/   `factory train-dubber` recipe flashlips-refine, stage editor, on those pairs, started
              from the round's editor (init_from); its final/ is the next round's generator

OUT/rounds.json keeps every round side by side: its generator, manifest, pair counts, checkpoint
and the editor's held-out numbers (mouth L1 against the "return the input unchanged" baseline).
A rerun of the same command resumes: recorded rounds are kept, and the unfinished round's pairs
run and training each resume from their own state. A rerun with other settings is refused
naming the keys (start a new OUT instead). The last round's editor/final is what a lip_flow
stage (`factory train-dubber ... stage=lip_flow init_from=OUT/round_N/editor/final`) builds on.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factory.config import ConfigError, differences, load_config, to_dict
from factory.files import atomic_write

log = logging.getLogger(__name__)


@dataclass
class RefineConfig:
    out: str = "runs/refine"
    rounds: int = 2
    clip_stores: list[str] = field(default_factory=list)  # folders written by `factory ingest`
    generator_weights: str | None = None  # round 0's latent_editor folder; null: round 0 pairs by transplant
    pairs_config: str = "configs/demo.yaml"  # the factory config of each round's `factory pairs`
    pairs: list[str] = field(default_factory=list)  # its key=value overrides (filters, limits, executor)
    train_config: str = "configs/dubber_flashlips_cpu.yaml"  # a flashlips-refine config
    train: list[str] = field(default_factory=list)  # its key=value overrides (loop.steps, data.resolution)


def check(cfg: RefineConfig) -> None:
    from factory.storage import refuse_urls

    refuse_urls({"out": cfg.out, "clip_stores": cfg.clip_stores, "generator_weights": cfg.generator_weights},
                "`factory refine`")  # its pairs runs write local folders only (so far)
    if cfg.rounds < 1:
        raise ConfigError("config key 'rounds' must be >= 1")
    if not cfg.clip_stores:
        raise ConfigError("config key 'clip_stores' is empty: give folders written by `factory ingest`")
    for store in cfg.clip_stores:
        if not Path(store).is_dir():
            raise ConfigError(f"config key 'clip_stores': {store} is not a folder")
    if cfg.generator_weights is not None and not (Path(cfg.generator_weights) / "config.json").is_file():
        raise ConfigError(f"config key 'generator_weights': {cfg.generator_weights} is not a generator folder "
                          "(no config.json): give a `factory train-generator` latent_editor loop.out/final")
    for key in ("pairs_config", "train_config"):
        if not Path(getattr(cfg, key)).is_file():
            raise ConfigError(f"config key '{key}': no such file {getattr(cfg, key)}")


def refine(config_path: str | None, overrides=(), progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the rounds; returns the rounds.json record."""
    cfg = load_config(RefineConfig, config_path, overrides)
    check(cfg)
    out = Path(cfg.out)
    record_path = out / "rounds.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {"config": to_dict(cfg), "rounds": []}
    changed = differences(record["config"], to_dict(cfg))
    if changed:
        raise ConfigError(f"{out} holds refinement rounds made with other settings ({', '.join(changed)}); "
                          "use another out")
    out.mkdir(parents=True, exist_ok=True)
    for r in range(len(record["rounds"]), cfg.rounds):
        generator = record["rounds"][-1]["checkpoint"] if r else cfg.generator_weights
        record["rounds"].append(run_round(cfg, r, generator, progress))
        atomic_write(record_path, json.dumps(record, indent=1))
        log.info("refine: round %d of %d done: %s", r + 1, cfg.rounds, record["rounds"][-1]["checkpoint"])
    return record


def run_round(cfg: RefineConfig, r: int, generator: str | None, progress: bool) -> dict[str, Any]:
    from factory.executors import make_executor
    from factory.trainers.dubbers import train_dubber
    from pipelines.pseudo_pairs import run_pairs
    from pipelines.settings import load_factory_config

    folder = Path(cfg.out) / f"round_{r}"
    pairs_out = folder / "pairs"
    generate = (["generate.generator=latent_editor", f"generate.weights={generator}"] if generator
                else ["generate.generator=transplant"])
    factory_cfg = load_factory_config(cfg.pairs_config, [*cfg.pairs, *generate, f"out={pairs_out}",
                                                          f"clip_stores=[{', '.join(cfg.clip_stores)}]"])
    executor = make_executor(factory_cfg.executor)
    try:
        summary = run_pairs(factory_cfg, executor, progress=progress and factory_cfg.executor.progress)
    finally:
        executor.close()
    if summary.get("verify_problems"):
        raise RuntimeError(f"round {r}: the pairs in {pairs_out} do not match their manifest: "
                           + "; ".join(summary["verify_problems"]))
    if not summary.get("pairs_written"):
        raise ConfigError(f"round {r}: the generator kept no pairs in {pairs_out} (see its samples.parquet): "
                          "nothing to train on; loosen the filters in `pairs`")
    editor_out = folder / "editor"
    metrics = train_dubber(cfg.train_config, [*cfg.train, "recipe=flashlips-refine", "stage=editor",
                                              f"manifests=[{pairs_out / 'manifest.json'}]",
                                              f"init_from={generator if generator else 'null'}",
                                              f"loop.out={editor_out}"])
    return {"round": r, "generator": generator or "transplant", "manifest": str(pairs_out / "manifest.json"),
            "pairs_written": summary["pairs_written"], "checkpoint": str(editor_out / "final"),
            "heldout": metrics.get("last_eval", {}), "train_seconds": metrics.get("seconds")}
