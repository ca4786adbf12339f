"""The lip and texture LoRA experts of X-Dub Stage II, as peft adapters on the editor, and their
routing by flow time.

Phase 2 trains a "lip" adapter (mid noise, where lip shape is decided), phase 3 a "texture" adapter
(low noise, where detail is); the base weights stay as phase 1 left them. At sampling time each
denoising step runs with at most one expert on: the lip expert for t in [0.4, 0.8], the texture
expert for t in [0, 0.3], none elsewhere (X-Dub §3.3). peft has no per-timestep routing, so the
sampler flips the adapters between steps (`activate_expert`: `disable_adapters()` outside the
ranges, `enable_adapters(); set_adapter(name)` inside; flag flips, no weight copies), as
MODELS.md records and as diffusers' WanPipeline routes its two transformers by noise level.

Adapters sit on the self-attention and feed-forward of every Wan block and on the frame-wise audio
cross-attention (the lips follow the audio through it); the text stand-in's cross-attention has
none. Saving and loading go through peft's own state-dict helpers, one folder per expert.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

# X-Dub §3.3: the flow-time range in which each expert is on (closed intervals)
EXPERT_RANGES: dict[str, tuple[float, float]] = {"lip": (0.4, 0.8), "texture": (0.0, 0.3)}

# Wan blocks' self-attention and feed-forward, and the audio cross-attention (not the text one: attn2)
LORA_TARGETS = (r"(.*\.)?(attn1\.(to_q|to_k|to_v|to_out\.0)|ffn\.net\.(0\.proj|2)"
                r"|audio_attention\.\d+\.(to_q|to_k|to_v|to_out))")
ADAPTER_FILE, ADAPTER_CONFIG = "adapter_model.safetensors", "adapter_config.json"


@dataclass
class LoraExpertConfig:
    rank: int = 16
    alpha: float = 16.0  # LoRA scale alpha / rank
    dropout: float = 0.0
    target_modules: str = LORA_TARGETS  # a regex peft matches against module names
    ranges: dict[str, list[float]] = field(default_factory=lambda: {k: list(v) for k, v in EXPERT_RANGES.items()})


def lora_config(cfg: LoraExpertConfig):
    from peft import LoraConfig

    return LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=cfg.target_modules,
                      init_lora_weights=True)  # B = 0: a new expert leaves the model's output unchanged


def add_expert(model: nn.Module, name: str, cfg: LoraExpertConfig) -> None:
    """Add the adapter `name` (zero at init: B = 0), leaving the adapters active as they were.
    diffusers' add_adapter makes the new one active: undo that so adding changes no output."""
    before = expert_state(model)
    with warnings.catch_warnings():  # peft warns that a second adapter is one more adapter: it is meant
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        model.add_adapter(lora_config(cfg), adapter_name=name)
    activate_expert(model, before)


def expert_names(model: nn.Module) -> list[str]:
    return list(getattr(model, "peft_config", {}) or {})


def expert_for_time(t: float, ranges: dict[str, list[float]] | None = None, available=None) -> str | None:
    """The expert that is on at flow time t (None: the base model alone). Only experts in
    `available` (default: all in `ranges`) are chosen. Bounds are closed up to 1e-6: a sampler's
    float32 sigma of 0.8 is 0.80000001."""
    ranges = ranges or {k: list(v) for k, v in EXPERT_RANGES.items()}
    for name, (lo, hi) in ranges.items():
        if (available is None or name in available) and lo - 1e-6 <= t <= hi + 1e-6:
            return name
    return None


def _tuner_layers(model: nn.Module):
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


def activate_expert(model: nn.Module, name: str | None) -> None:
    """Exactly `name` on (None: every adapter off, the base model alone)."""
    if not expert_names(model):
        if name is not None:
            raise ValueError(f"no adapters on this model; cannot activate {name!r}")
        return
    if name is None:
        model.disable_adapters()
        return
    if name not in expert_names(model):
        raise ValueError(f"no adapter {name!r}; the model has {expert_names(model)}")
    model.enable_adapters()
    model.set_adapter(name)


def expert_state(model: nn.Module) -> str | None:
    """The adapter the forward uses now (None: none), read from the LoRA layers themselves."""
    layers = _tuner_layers(model)
    if not layers or layers[0].disable_adapters:
        return None
    active = layers[0].active_adapters
    return active[0] if len(active) == 1 else ",".join(active)


def train_only(model: nn.Module, part: str) -> list[nn.Parameter]:
    """requires_grad on the base weights ("base": every non-LoRA parameter) or on one expert's
    LoRA weights; everything else frozen. Returns the trainable parameters."""
    names = expert_names(model)
    if part != "base" and part not in names:
        raise ValueError(f"no adapter {part!r}; the model has {names}")
    out = []
    for pname, p in model.named_parameters():
        lora = ".lora_" in pname
        want = (not lora) if part == "base" else (lora and f".{part}." in pname + ".")
        p.requires_grad_(want)
        if want:
            out.append(p)
    return out


# -- weights ----------------------------------------------------------------------------------

def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's own weights without any LoRA (peft's `.base_layer.` wrapper names undone): what
    a model without adapters loads."""
    out = {}
    for k, v in model.state_dict().items():
        if ".lora_" in k:
            continue
        out[k.replace(".base_layer.", ".")] = v
    return out


def save_expert(model: nn.Module, name: str, folder: str | Path, cfg: LoraExpertConfig) -> None:
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(model, adapter_name=name)
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(folder / ADAPTER_FILE))
    (folder / ADAPTER_CONFIG).write_text(json.dumps(asdict(cfg), indent=1, sort_keys=True))


def load_expert(model: nn.Module, name: str, folder: str | Path) -> LoraExpertConfig:
    """Add adapter `name` from a `save_expert` folder (every weight must load)."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg = LoraExpertConfig(**json.loads((folder / ADAPTER_CONFIG).read_text()))
    add_expert(model, name, cfg)
    result = set_peft_model_state_dict(model, load_file(str(folder / ADAPTER_FILE)), adapter_name=name)
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"{folder}: LoRA weights that fit no layer: {result.unexpected_keys[:5]}")
    return cfg
