"""Checkpoints of the shared training loop (factory/trainers/loop.py): everything a run needs to
continue exactly where it stopped.

    out/checkpoints/step-NNNNNNNN/
        model.safetensors   the raw (not averaged) weights of the whole module, frozen parts too
        trainer.pt          step, optimizer, scheduler, EMA, per-rank RNG and data positions,
                            world size, metric history, the run's config

A checkpoint is written under `.partial` and renamed: it is complete or absent. The newest
`keep` are kept. Resuming compares the saved config with the new one: keys that change what is
trained (lr, batch size, model, data...) must match, and the refusal names each that differs.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from factory.config import ConfigError, differences

MODEL_FILE, TRAINER_FILE = "model.safetensors", "trainer.pt"


def save_checkpoint(out: Path, step: int, model: torch.nn.Module, trainer_state: dict[str, Any], keep: int) -> Path:
    from safetensors.torch import save_model

    root = Path(out) / "checkpoints"
    final, tmp = root / f"step-{step:08d}", root / f"step-{step:08d}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / MODEL_FILE))  # save_model: tied weights are written once
    torch.save(trainer_state, tmp / TRAINER_FILE)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in sorted(root.glob("step-????????"))[:-max(1, keep)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(out: Path) -> Path | None:
    done = sorted((Path(out) / "checkpoints").glob("step-????????"))
    return done[-1] if done else None


def checkpoint_step(path: Path) -> int:
    return int(Path(path).name.rsplit("-", 1)[-1]) if Path(path).name.startswith("step-") else \
        int(load_trainer_state(path)["step"])


def load_trainer_state(path: Path) -> dict[str, Any]:
    # weights_only=False: the state holds numpy's and Python's RNG states, written by this loop
    return torch.load(Path(path) / TRAINER_FILE, map_location="cpu", weights_only=False)


def load_model_weights(path: Path, model: torch.nn.Module) -> None:
    from safetensors.torch import load_model

    load_model(model, str(Path(path) / MODEL_FILE), device=str(next(model.parameters()).device))


# -- RNG states -------------------------------------------------------------------------------

def capture_rng() -> dict[str, Any]:
    """Every global RNG a training step may draw from (dropout, noise, augmentation)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # all devices


# -- config on resume -------------------------------------------------------------------------

def config_changes(saved: dict[str, Any], now: dict[str, Any], free: set[str]) -> list[str]:
    """`key: old -> new` for each key that differs, other than the dotted keys in `free` (and
    anything below them)."""
    return [d for d in differences(saved, now)
            if not any(d.split(":", 1)[0] == k or d.startswith(k + ".") for k in free)]


def check_resumable(path: Path, saved: dict[str, Any], now: dict[str, Any], free: set[str]) -> None:
    changed = config_changes(saved, now, free)
    if changed:
        raise ConfigError(f"cannot resume from {path}: these config keys change training and differ from the "
                          f"checkpoint's ({'; '.join(changed)}); set them back or use a new `loop.out`")
