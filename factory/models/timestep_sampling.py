"""Flow times of X-Dub Stage II's timestep-adaptive multi-phase training, and the single-step
estimate its lip and texture losses read.

Each phase draws t logit-normally (u = sigmoid(n), n ~ N(mean, std)) and shifts it,
t = a u / (1 + (a - 1) u) (X-Dub Eq. 2, the shift `FlowMatchEulerDiscreteScheduler(shift=a)`
applies). a > 1 leans on the noisy end (structure, then lip shape), a < 1 on the clean end
(texture). The three phases:

    phase 1  all parameters        a = 5.0   (structure)
    phase 2  lip LoRA expert       a = 1.5   (mid noise: lip shape) + SyncNet loss
    phase 3  texture LoRA expert   a = 0.2   (low noise: texture) + identity loss

The distribution is known in closed form, so tests check samples against it: u = t / (a - (a - 1) t)
inverts the shift and CDF(t) = Phi((logit(u) - mean) / std).

The auxiliary losses see a clean estimate from one model call, x0_hat = z_t - tau * v_hat with
tau = min(t, tau_max) (X-Dub: tau_max = 0.6): for t <= tau_max it is the exact one-step estimate;
above it the estimate is pulled toward z_t, so a very noisy sample does not turn the SyncNet's
gradient into noise. Sampling the times and the shift itself live in
factory/models/flow_matching.py; this module reuses them.
"""

from __future__ import annotations

import math

import torch

from factory.models.flow_matching import sample_flow_time, shift_flow_time

# X-Dub's shift per phase
PHASE_SHIFT = {1: 5.0, 2: 1.5, 3: 0.2}
TAU_MAX = 0.6

__all__ = ["PHASE_SHIFT", "TAU_MAX", "sample_flow_time", "shift_flow_time", "unshift_flow_time",
           "shifted_logit_normal_cdf", "shifted_logit_normal_quantile", "truncated_tau", "one_step_x0"]


def unshift_flow_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """The inverse of `shift_flow_time`: u = t / (a - (a - 1) t)."""
    return t / (shift - (shift - 1) * t)


def shifted_logit_normal_cdf(t: torch.Tensor, shift: float, logit_mean: float = 0.0,
                             logit_std: float = 1.0) -> torch.Tensor:
    """P(T <= t) for T = shift(sigmoid(N(mean, std))), t in (0, 1)."""
    u = unshift_flow_time(t.double(), shift).clamp(1e-12, 1 - 1e-12)
    z = (torch.log(u) - torch.log1p(-u) - logit_mean) / logit_std
    return 0.5 * (1 + torch.erf(z / math.sqrt(2)))


def shifted_logit_normal_quantile(q: float, shift: float, logit_mean: float = 0.0, logit_std: float = 1.0) -> float:
    """The q-quantile (q = 0.5: the median) of the shifted logit-normal flow time."""
    from statistics import NormalDist

    u = 1 / (1 + math.exp(-(logit_mean + logit_std * NormalDist().inv_cdf(q))))
    return shift * u / (1 + (shift - 1) * u)


def truncated_tau(t: torch.Tensor, tau_max: float = TAU_MAX) -> torch.Tensor:
    """tau = min(t, tau_max): the step length of the single-step clean estimate."""
    return t.clamp(max=tau_max)


def one_step_x0(z_t: torch.Tensor, v_hat: torch.Tensor, t: torch.Tensor, tau_max: float = TAU_MAX) -> torch.Tensor:
    """x0_hat = z_t - tau * v_hat, tau = min(t, tau_max) per sample; t (B,), z_t and v_hat (B, ...)."""
    tau = truncated_tau(t, tau_max).reshape(-1, *([1] * (z_t.dim() - 1))).to(z_t.dtype)
    return z_t - tau * v_hat
