"""The shared training loop (factory/trainers/loop.py) with a tiny recipe: exact resume (4 steps ==
2 + resume + 2, bit for bit, with dropout, EMA and gradient accumulation), refusal to resume with a
changed config, EMA export, learning, accumulation == a bigger batch, and Ray Train with two CPU ranks."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from factory.config import ConfigError, build
from factory.trainers.checkpoints import load_trainer_state
from factory.trainers.loop import LoopConfig, Recipe, lr_factor, run_training, train

FEATURES = 8


# -- a tiny recipe: regression of a fixed random function, data drawn per sample index ----------------

@dataclass
class TinyConfig:
    loop: LoopConfig = field(default_factory=LoopConfig)
    hidden: int = 32
    dropout: float = 0.0
    heldout: int = 128
    batches: str = "state_dict"  # how the batches resume: state_dict | start_at | plain


def sample(seed: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample `index` of the stream `seed`: the same wherever and whenever it is drawn."""
    rng = np.random.default_rng([seed, index])
    x = rng.normal(size=FEATURES).astype(np.float32)
    w = np.random.default_rng(1234).normal(size=(FEATURES,)).astype(np.float32)
    return x, np.float32([np.tanh(x @ w / 3) + 0.05 * rng.normal()])


def make_batch(seed: int, indices) -> dict:
    xs, ys = zip(*(sample(seed, int(i)) for i in indices))
    return {"x": torch.from_numpy(np.stack(xs)), "y": torch.from_numpy(np.stack(ys)), "key": [str(i) for i in indices]}


class SampleStream:
    """Endless batches; rank r of n takes samples r, r+n, r+2n, ..."""

    def __init__(self, batch_size: int, rank: int, world_size: int, seed: int):
        self.batch_size, self.rank, self.world_size, self.seed, self.position = batch_size, rank, world_size, seed, 0

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        first = self.position * self.batch_size
        self.position += 1
        return make_batch(self.seed, [(first + i) * self.world_size + self.rank for i in range(self.batch_size)])


class TinyBatches(SampleStream):
    """Resumes by `state_dict` / `load_state_dict`."""

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = state["position"]


class StartAtBatches(SampleStream):
    """Resumes by `start_at(position)`."""

    def start_at(self, position: int) -> None:
        self.position = position


def plain_batches(batch_size: int, rank: int, world_size: int, seed: int):
    """A generator: no way to skip ahead (the loop redraws)."""
    yield from SampleStream(batch_size, rank, world_size, seed)


class TinyRecipe(Recipe):
    name = "tiny"

    def build_model(self, device):
        frozen = torch.nn.Linear(FEATURES, FEATURES)  # a frozen part, as a VAE would be
        frozen.requires_grad_(False)
        c = self.config
        return torch.nn.Sequential(frozen, torch.nn.Linear(FEATURES, c.hidden), torch.nn.GELU(),
                                   torch.nn.Dropout(c.dropout), torch.nn.Linear(c.hidden, 1)).to(device)

    def train_batches(self, batch_size, rank, world_size, seed):
        kind = {"state_dict": TinyBatches, "start_at": StartAtBatches, "plain": plain_batches}[self.config.batches]
        return kind(batch_size, rank, world_size, seed)

    def loss(self, model, batch, step):
        pred = model(batch["x"])
        return F.mse_loss(pred, batch["y"]), {"mae": float((pred - batch["y"]).detach().abs().mean())}

    def evaluate(self, model, device):
        batch = make_batch(10**6, range(self.config.heldout))  # another stream: held out
        return {"heldout_mse": float(F.mse_loss(model(batch["x"].to(device)), batch["y"].to(device)))}


def recipe(out, **loop) -> TinyRecipe:
    settings = {"out": str(out), "steps": 4, "batch_size": 4, "lr": 1e-2, "log_every": 1, "eval_every": 2,
                "checkpoint_every": 100, "device": "cpu", "progress": False, **loop}
    extra = {k: settings.pop(k) for k in ("dropout", "batches", "hidden") if k in settings}
    return TinyRecipe(build(TinyConfig, {"loop": settings, **extra}))


def checkpoint(out, step: int):
    path = out / "checkpoints" / f"step-{step:08d}"
    return load_file(str(path / "model.safetensors")), load_trainer_state(path)


def assert_same_tensors(a, b):
    """Bit-identical nested states (dicts / lists of tensors and numbers)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same_tensors(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_tensors(x, y)
    else:
        assert a == b


# -- exact resume -----------------------------------------------------------------------------------

@pytest.mark.parametrize("batches", ["state_dict", "start_at", "plain"])
def test_four_steps_equal_two_plus_resume_plus_two(tmp_path, batches):
    settings = dict(dropout=0.5, ema_decay=0.9, grad_accum=2, warmup=2, schedule="cosine", batches=batches)
    whole = train(recipe(tmp_path / "whole", **settings))
    first = train(recipe(tmp_path / "cut", **settings), stop_at=2)
    assert first["steps"] == 2 and "weights" not in first and first["resumed_from"] is None
    resumed = train(recipe(tmp_path / "cut", **settings))
    assert resumed["resumed_from"] == 2 and resumed["steps"] == 4

    weights_a, state_a = checkpoint(tmp_path / "whole", 4)
    weights_b, state_b = checkpoint(tmp_path / "cut", 4)
    assert_same_tensors(weights_a, weights_b)
    for key in ("ema", "optimizer", "scheduler", "step"):
        assert_same_tensors(state_a[key], state_b[key])
    assert_same_tensors(load_file(str(tmp_path / "whole" / "final" / "model.safetensors")),
                        load_file(str(tmp_path / "cut" / "final" / "model.safetensors")))
    # the same losses, step by step, and the same held-out numbers
    assert whole["evals"] == resumed["evals"]
    losses = {r["step"]: r["loss"] for r in state_b["history"]}
    assert {r["step"]: r["loss"] for r in state_a["history"]} == losses
    if batches == "state_dict":  # dropout draws from the saved RNG state: another state, other weights
        train(recipe(tmp_path / "other", **settings), stop_at=2)
        path = tmp_path / "other" / "checkpoints" / "step-00000002" / "trainer.pt"
        state = torch.load(path, weights_only=False)
        state["ranks"][0]["rng"]["torch"] = torch.Generator().manual_seed(99).get_state()
        torch.save(state, path)
        train(recipe(tmp_path / "other", **settings))
        assert not torch.equal(checkpoint(tmp_path / "other", 4)[0]["4.weight"], weights_a["4.weight"])


def test_resume_refuses_a_changed_lr_naming_it(tmp_path):
    train(recipe(tmp_path, lr=1e-2), stop_at=2)
    with pytest.raises(ConfigError, match=r"loop\.lr: 0\.01 -> 0\.02"):
        train(recipe(tmp_path, lr=2e-2))
    with pytest.raises(ConfigError, match=r"'hidden'|hidden: 32 -> 16"):
        train(recipe(tmp_path, hidden=16))
    # bookkeeping keys may change: a longer constant-schedule run, other logging and checkpoint cadence
    done = train(recipe(tmp_path, lr=1e-2, steps=6, log_every=3, checkpoint_every=3))
    assert done["resumed_from"] == 2 and done["steps"] == 6


def test_resume_with_cosine_refuses_a_changed_length(tmp_path):
    train(recipe(tmp_path, schedule="cosine"), stop_at=2)
    with pytest.raises(ConfigError, match=r"loop\.steps: 4 -> 8"):
        train(recipe(tmp_path, schedule="cosine", steps=8))


# -- EMA --------------------------------------------------------------------------------------------

def test_ema_weights_differ_from_raw_and_are_exported(tmp_path):
    metrics = train(recipe(tmp_path, steps=5, ema_decay=0.8))
    raw, state = checkpoint(tmp_path, 5)
    exported = load_file(str(tmp_path / "final" / "model.safetensors"))
    assert metrics["weights"] == str(tmp_path / "final")
    assert json.loads((tmp_path / "final" / "config.json").read_text())["recipe"] == "tiny"
    assert set(state["ema"]["shadow"]) == {"1.weight", "1.bias", "4.weight", "4.bias"}  # trainable only
    for name, averaged in state["ema"]["shadow"].items():
        assert torch.equal(exported[name], averaged)
        assert not torch.allclose(exported[name], raw[name], atol=1e-4)
    assert torch.equal(exported["0.weight"], raw["0.weight"])  # frozen: the same in both


# -- learning and accumulation ------------------------------------------------------------------------

def test_tiny_recipe_learns(tmp_path):
    metrics = train(recipe(tmp_path, steps=60, batch_size=16, log_every=10, eval_every=30, lr=1e-2,
                           warmup=5, schedule="cosine", ema_decay=0.9))
    evals = [e["heldout_mse"] for e in metrics["evals"]]
    assert [e["step"] for e in metrics["evals"]] == [0, 30, 60]
    assert evals[-1] < 0.3 * evals[0], evals  # measured: 0.62 -> 0.13
    assert (tmp_path / "tensorboard").is_dir() and list((tmp_path / "tensorboard").iterdir())
    assert (tmp_path / "config.yaml").is_file() and json.loads((tmp_path / "metrics.json").read_text())["steps"] == 60


def test_grad_accumulation_matches_a_bigger_batch(tmp_path):
    common = dict(steps=3, ema_decay=None, weight_decay=0.1, grad_clip=0.5)
    train(recipe(tmp_path / "accum", batch_size=4, grad_accum=2, **common))
    train(recipe(tmp_path / "big", batch_size=8, grad_accum=1, **common))
    a, b = checkpoint(tmp_path / "accum", 3)[0], checkpoint(tmp_path / "big", 3)[0]
    assert not torch.equal(a["4.weight"], recipe(tmp_path).build_model("cpu")[4].weight.detach())  # it trained
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_learning_rate_schedule():
    cfg = LoopConfig(steps=10, warmup=2, schedule="cosine", min_lr_ratio=0.1)
    f = lr_factor(cfg)
    assert [round(f(s), 4) for s in (0, 1)] == [round(1 / 3, 4), round(2 / 3, 4)]
    assert f(2) == pytest.approx(1.0) and f(10) == pytest.approx(0.1) and f(6) == pytest.approx(0.55)
    assert lr_factor(LoopConfig(steps=10, warmup=0))(9) == 1.0


def test_bad_loop_settings_name_their_key(tmp_path):
    with pytest.raises(ConfigError, match=r"loop\.schedule"):
        train(recipe(tmp_path, schedule="linear"))
    with pytest.raises(ConfigError, match=r"loop\.ema_decay"):
        train(recipe(tmp_path, ema_decay=1.5))


# -- Ray Train: two CPU ranks -----------------------------------------------------------------------------

@pytest.mark.slow
def test_ray_train_two_workers_checkpoints_exports_and_resumes(tmp_path):
    from factory import cluster

    out = tmp_path / "run"
    started = cluster.connect(num_cpus=2)  # one embedded Ray for both runs (run_training joins it)
    try:
        settings = dict(executor="ray", num_workers=2, grad_accum=2, checkpoint_every=1, ema_decay=0.9)
        first = run_training(recipe(out, steps=2, **settings))
        assert first["steps"] == 2 and (out / "final" / "model.safetensors").is_file()
        state = load_trainer_state(out / "checkpoints" / "step-00000002")
        assert state["world_size"] == 2 and [r["data"]["source"]["position"] for r in state["ranks"]] == [4, 4]
        assert state["ranks"][0]["weights"] == state["ranks"][1]["weights"]  # DDP kept the ranks in step
        assert list((out / "ray").rglob("step-00000002"))  # reported to Ray Train too
        resumed = run_training(recipe(out, steps=4, **settings))
    finally:
        cluster.disconnect(started)
    assert resumed["resumed_from"] == 2 and resumed["steps"] == 4
    assert [e["step"] for e in resumed["evals"]] == [0, 2, 4] and math.isfinite(resumed["last_eval"]["heldout_mse"])
    assert load_trainer_state(out / "checkpoints" / "step-00000004")["step"] == 4
    with pytest.raises(ConfigError, match="loop.num_workers"):  # 2 ranks' data positions cannot go to 1
        train(recipe(out, steps=6))
