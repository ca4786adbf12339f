"""Checkpoints of the shared training loop (factory/trainers/loop.py): everything a run needs to
continue exactly where it stopped.

    out/checkpoints/step-NNNNNNNN/
        model.safetensors   the raw (not averaged) weights of the whole module, frozen parts too
        trainer.pt          step, optimizer, scheduler, EMA, per-rank RNG and data positions,
                            world size, metric history, the run's config

`out` is a local path or a URL (factory/storage.py). A checkpoint is complete or absent: locally
written under `.partial` and renamed; on object storage (no rename) uploaded file by file with
trainer.pt last, and only a folder holding trainer.pt counts. The newest `keep` are kept.
Resuming compares the saved config with the new one: keys that change what is
trained (lr, batch size, model, data...) must match, and the refusal names each that differs.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from factory import storage
from factory.config import ConfigError, differences

MODEL_FILE, TRAINER_FILE = "model.safetensors", "trainer.pt"


def save_checkpoint(out: str | Path, step: int, model: torch.nn.Module, trainer_state: dict[str, Any],
                    keep: int) -> str:
    from safetensors.torch import save_model

    final = storage.join(out, "checkpoints", f"step-{step:08d}")
    with storage.staged_dir(final, last=TRAINER_FILE) as tmp:
        save_model(model, str(tmp / MODEL_FILE))  # save_model: tied weights are written once
        torch.save(trainer_state, tmp / TRAINER_FILE)
    for old in completed_checkpoints(out)[:-max(1, keep)]:
        storage.remove(old)
    return final


def completed_checkpoints(out: str | Path) -> list[str]:
    """The complete checkpoint folders under out/checkpoints, oldest first."""
    return [storage.parent(p) for p in storage.glob(storage.join(out, "checkpoints", "step-????????", TRAINER_FILE))]


def latest_checkpoint(out: str | Path) -> str | None:
    done = completed_checkpoints(out)
    return done[-1] if done else None


def checkpoint_step(path: str | Path) -> int:
    name = storage.name(path)
    return int(name.rsplit("-", 1)[-1]) if name.startswith("step-") else int(load_trainer_state(path)["step"])


def load_trainer_state(path: str | Path) -> dict[str, Any]:
    # weights_only=False: the state holds numpy's and Python's RNG states, written by this loop
    data = storage.read_bytes(storage.join(path, TRAINER_FILE))
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


def load_model_weights(path: str | Path, model: torch.nn.Module) -> None:
    from safetensors.torch import load_model

    with storage.local_file(storage.join(path, MODEL_FILE)) as file:
        load_model(model, str(file), device=str(next(model.parameters()).device))


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
