"""Exponential moving average of a model's trainable weights, for export and held-out evaluation.

    ema = EMA(model, decay=0.999)
    ... optimizer.step(); ema.update(model)
    with ema.swapped_in(model):  # the model holds the averaged weights inside the block
        save(model)

Only the parameters with `requires_grad` when the EMA is made are averaged (frozen parts such as
a VAE never change, so a copy of them would only cost memory); they stay averaged if a recipe
freezes some of them for a phase of training. With `warmup`, the decay of update n is
min(decay, (1 + n) / (10 + n)), the warm-up of diffusers' `EMAModel` and TensorFlow's
`ExponentialMovingAverage(num_updates=...)`: early averages are not dominated by the random
initial weights. The state (shadow weights, update count) goes into every checkpoint.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = True):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), not {decay}")
        self.decay, self.warmup, self.updates = decay, warmup, 0
        self.shadow = {n: p.detach().clone().float() for n, p in model.named_parameters() if p.requires_grad}

    def current_decay(self) -> float:
        n = self.updates
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """shadow <- decay * shadow + (1 - decay) * weights (a lerp towards the weights)."""
        params = dict(model.named_parameters())
        torch._foreach_lerp_(list(self.shadow.values()), [params[n].detach().float() for n in self.shadow],
                             1.0 - self.current_decay())
        self.updates += 1

    @contextmanager
    def swapped_in(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """The model with the averaged weights inside the block, its own weights again after."""
        params = {n: p for n, p in model.named_parameters() if n in self.shadow}
        saved = {n: p.detach().clone() for n, p in params.items()}
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(self.shadow[n])
        try:
            yield model
        finally:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(saved[n])

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "warmup": self.warmup, "updates": self.updates,
                "shadow": {n: t.detach().cpu() for n, t in self.shadow.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["shadow"]) != list(self.shadow):
            raise ValueError("EMA state does not match the model's trainable parameters")
        self.decay, self.warmup, self.updates = state["decay"], state["warmup"], int(state["updates"])
        for n, t in state["shadow"].items():
            self.shadow[n].copy_(t)

