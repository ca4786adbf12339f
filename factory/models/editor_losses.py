"""The FlashLips Stage 1 losses: how far the latent editor's frame is from the real one.

Given a training batch (the clip dataset's dict: `target`, `references`, `face_mask`, `lip_mask`,
`mouth_landmarks`, each (B, C, T, S, S) or (B, T, K, 2)), the frozen image VAE, the latent editor
and the lip-pose encoder (trained jointly: its pose is read from the real frame, so reconstruction
teaches it what the editor needs), every frame of every segment is one example:

    latent_l1          |z_hat - z_src|                           over the whole latent   (weight 0.1)
    masked_latent_l1   |z_hat - z_src| within the face mask at latent resolution     (0.1)
    lower_face_l1      |D(z_hat) - x| within face_mask                                 (10)
    mouth_l1           |D(z_hat) - x| within lip_mask, frames whose mouth covers at
                       least `mouth_min_area` of the frame only (a closed or lost mouth
                       would make it a handful of noisy pixels)                       (100)
    perceptual         VGG feature L1 between the real frame and the decoded lower face
                       pasted into it (weights from a local file, `vgg_path`)          (50)

Weights are FlashLips' (0.1/0.1/10/100/50). The VAE takes no gradient, but pixel losses flow
back through its decoder into the editor. Without `vgg_path` the perceptual term is skipped and
said so once (log and `EditorLoss.notes`), never replaced by a made-up number.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from factory.config import ConfigError
from factory.models.latent_editor import LatentEditor, decode_latents, encode_frames
from factory.models.lip_pose import LipPoseEncoder

log = logging.getLogger(__name__)

# torchvision's layer lists; the default taps are the ReLUs after blocks 1-4 (relu1_2 ... relu4_x)
VGG_LAYOUTS = {"vgg16": "D", "vgg19": "E"}
VGG_TAPS = {"vgg16": [3, 8, 15, 22], "vgg19": [3, 8, 17, 26]}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# 1. settings ------------------------------------------------------------------------------------

@dataclass
class EditorLossConfig:
    latent_l1: float = 0.1
    masked_latent_l1: float = 0.1
    lower_face_l1: float = 10.0
    mouth_l1: float = 100.0
    perceptual: float = 50.0
    mouth_min_area: float = 0.01  # lip_mask share of the frame below which a frame has no mouth term
    vgg_path: str | None = None  # local torchvision VGG weights (.pth or .safetensors); null: no perceptual term
    vgg_arch: str = "vgg19"  # "vgg16" | "vgg19"
    vgg_layers: list[int] = field(default_factory=list)  # indices into vgg.features; empty: VGG_TAPS
    decoded_frames: int | None = None  # decode at most this many frames a batch for pixel losses (memory)
    scaling_factor: float | None = None  # null: the VAE's config.scaling_factor


# 2. the perceptual network ----------------------------------------------------------------------

def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


class VGGPerceptual(nn.Module):
    """Mean L1 between VGG features of two image batches in [-1, 1], summed over the taps."""

    def __init__(self, path: str | Path, arch: str = "vgg19", layers: list[int] | None = None,
                 key: str = "vgg_path"):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        if arch not in VGG_LAYOUTS:
            raise ConfigError(f"config key 'vgg_arch': {arch!r} is not one of {sorted(VGG_LAYOUTS)}")
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config key '{key}': no VGG weights file at {path} (a torchvision {arch} "
                              "state dict saved as .pth or .safetensors)")
        self.taps = sorted(layers or VGG_TAPS[arch])
        self.features = make_layers(cfgs[VGG_LAYOUTS[arch]])[: self.taps[-1] + 1]
        # a whole torchvision model's state dict ("features.0.weight", "classifier...") or its features' alone
        state = {k.removeprefix("features."): v for k, v in _read_state_dict(path).items()}
        wanted = self.features.state_dict()
        missing = sorted(set(wanted) - set(state))
        if missing:
            raise ConfigError(f"config key '{key}': {path} is not a {arch} state dict (missing {missing[:4]})")
        self.features.load_state_dict({k: state[k] for k in wanted})
        self.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):  # always eval: frozen features
        return super().train(False)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x = torch.cat([pred, target]).float()
        x = ((x + 1) / 2 - self.mean) / self.std
        total = x.new_zeros(())
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                a, b = x.chunk(2)
                total = total + F.l1_loss(a, b)
        return total


# 3. the loss terms ------------------------------------------------------------------------------

def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean |pred - target| over the elements where mask is 1 (mask broadcasts over channels)."""
    mask = mask.expand_as(pred).to(pred.dtype)
    return ((pred - target).abs() * mask).sum() / mask.sum().clamp(min=1.0)


def latent_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 1, S, S) {0, 1} -> (N, 1, h, w): 1 where any pixel of the latent cell is masked."""
    return F.adaptive_max_pool2d(mask.float(), size)


def mouth_pixel_l1(pred: torch.Tensor, target: torch.Tensor, lip_mask: torch.Tensor,
                   min_area: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(L1 within lip_mask over the frames whose mouth covers >= min_area of the frame, those frames
    as a bool (N,)). Exactly 0 when no frame qualifies; a frame below the threshold adds nothing."""
    used = lip_mask.flatten(1).float().mean(dim=1) >= min_area
    if not used.any():
        return pred.new_zeros(()), used
    return masked_l1(pred[used], target[used], lip_mask[used]), used


# 4. one batch -----------------------------------------------------------------------------------

def frames_of(video: torch.Tensor) -> torch.Tensor:
    """(B, C, T, S, S) -> (B*T, C, S, S), frames of one segment consecutive."""
    return video.transpose(1, 2).flatten(0, 1)


class EditorLoss(nn.Module):
    """`loss(batch, vae, editor, lip_encoder) -> (total, {component: detached value})`."""

    def __init__(self, cfg: EditorLossConfig | None = None, key_prefix: str = ""):
        super().__init__()
        self.cfg = cfg = cfg or EditorLossConfig()
        self.notes: list[str] = []
        self.vgg = None
        if cfg.vgg_path:
            self.vgg = VGGPerceptual(cfg.vgg_path, cfg.vgg_arch, cfg.vgg_layers or None, key=f"{key_prefix}vgg_path")
        elif cfg.perceptual:
            note = (f"perceptual loss skipped: no VGG weights given (set {key_prefix}vgg_path to a local "
                    f"torchvision {cfg.vgg_arch} .pth or .safetensors)")
            self.notes.append(note)
            log.warning(note)

    def forward(self, batch: dict, vae, editor: LatentEditor,
                lip_encoder: LipPoseEncoder) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        device = next(editor.parameters()).device
        x = frames_of(batch["target"].to(device))
        face = frames_of(batch["face_mask"].to(device))
        lip = frames_of(batch["lip_mask"].to(device))
        b, _, t = batch["target"].shape[:3]
        refs = batch["references"].to(device)
        landmarks = batch["mouth_landmarks"].to(device).flatten(0, 1)

        with torch.no_grad():  # the VAE is frozen: its encoder needs no graph
            z_src = encode_frames(vae, x, cfg.scaling_factor)
            z_masked = encode_frames(vae, x * (1 - face), cfg.scaling_factor)
            z_ref = encode_frames(vae, frames_of(refs), cfg.scaling_factor).unflatten(0, (b, refs.shape[2]))
        lips = lip_encoder(landmarks, x)
        z_hat = editor(z_masked, z_ref, lips, frames_per_reference_set=t).float()
        z_src = z_src.float()

        parts = {
            "latent_l1": F.l1_loss(z_hat, z_src),
            "masked_latent_l1": masked_l1(z_hat, z_src, latent_mask(face, z_hat.shape[-2:])),
        }
        pick = self._decoded(len(x))
        x_hat = decode_latents(vae, z_hat[pick], cfg.scaling_factor).float()
        x, face, lip = x[pick], face[pick], lip[pick]
        parts["lower_face_l1"] = masked_l1(x_hat, x, face)
        parts["mouth_l1"] = mouth_pixel_l1(x_hat, x, lip, cfg.mouth_min_area)[0]
        if self.vgg is not None:
            self.vgg.to(device)
            pasted = x_hat * face + x * (1 - face)  # only the lower face differs from the real frame
            parts["perceptual"] = self.vgg(pasted, x)

        total = sum(getattr(cfg, name) * value for name, value in parts.items())
        return total, {name: value.detach() for name, value in parts.items()}

    def _decoded(self, n: int) -> torch.Tensor | slice:
        """Which frames are decoded for the pixel losses: all, or `decoded_frames` evenly spaced."""
        k = self.cfg.decoded_frames
        if not k or k >= n:
            return slice(None)
        return torch.linspace(0, n - 1, k).round().long()
