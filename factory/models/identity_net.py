"""A differentiable face-identity embedding for X-Dub Stage II's texture phase (identity loss).

The factory's identity filter (filters/identity.py) scores pairs with dlib or an ArcFace ONNX run
by onnxruntime: neither passes gradients. The loss needs a torch network, so this module gives:

- "arcface": ArcFace as a torch module from a local file: a TorchScript export (`.pt` / `.pth` /
  `.jit`, e.g. insightface's arcface_torch iresnet traced with torch.jit.trace) or an ONNX file
  (`w600k_r50.onnx`, converted with the optional `onnx2torch` package). Input: RGB 112 x 112,
  (x - 127.5) / 127.5, insightface's alignment;
- "tiny": a small random conv net, seeded (tests and the CPU demo: it exercises the real path,
  and its cosine still moves with the pixels, but it knows no faces).

Crops are the factory's template-aligned faces, so the 5 keypoints ArcFace aligns on come from the
template (factory/faces/embedders.py `template_keypoints`), as the identity filter does; the warp
to 112 x 112 is a fixed similarity transform applied with `grid_sample` (differentiable).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from factory.config import ConfigError

# insightface's ArcFace destination keypoints for a 112 x 112 crop
ARCFACE_DST = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                        [70.7299, 92.2041]], np.float64)
ARCFACE_SIZE = 112


def alignment_grid(crop_size: int, out_size: int = ARCFACE_SIZE) -> torch.Tensor:
    """(1, out, out, 2) sampling grid taking a template-aligned crop of `crop_size` to ArcFace's
    112 x 112 layout (normalised coordinates, align_corners=False)."""
    from factory.faces.align import umeyama
    from factory.faces.embedders import template_keypoints

    dst = ARCFACE_DST * out_size / ARCFACE_SIZE
    # output pixel -> crop pixel: the transform from the ArcFace layout back to the crop
    a = umeyama(dst, template_keypoints(crop_size).astype(np.float64))  # 2x3: crop = A [out; 1]
    centres = (np.arange(out_size) + 0.5)
    gx, gy = np.meshgrid(centres, centres)
    pts = np.stack([gx, gy, np.ones_like(gx)], -1) @ a.T  # (out, out, 2) crop pixel coords
    grid = pts / crop_size * 2 - 1
    return torch.from_numpy(grid.astype(np.float32))[None]


class TinyIdentityNet(nn.Module):
    """A seeded random conv net on 112 x 112 crops -> (B, dim) unit embeddings (tests, CPU demo)."""

    def __init__(self, dim: int = 32, width: int = 8, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = nn.Sequential(nn.Conv2d(3, width, 5, 4, 2), nn.ReLU(), nn.Conv2d(width, 2 * width, 3, 2, 1),
                                     nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(32 * width, dim))

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.net(faces)


class IdentityEmbedder(nn.Module):
    """Frozen: aligned crops (B, 3, S, S) in [-1, 1] -> (B, D) unit identity embeddings, with gradients
    to the crops."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.eval()
        for p in self.net.parameters():  # frozen (a ScriptModule has no requires_grad_)
            p.requires_grad_(False)
        self._grids: dict[tuple[int, str], torch.Tensor] = {}

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        key = (crops.shape[-1], str(crops.device))
        if key not in self._grids:
            self._grids[key] = alignment_grid(crops.shape[-1]).to(crops.device)
        grid = self._grids[key].expand(len(crops), -1, -1, -1).to(crops.dtype)
        faces = F.grid_sample(crops, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return F.normalize(self.net(faces).float(), dim=1, eps=1e-6)

    def train(self, mode: bool = True) -> "IdentityEmbedder":  # always frozen, BatchNorm in eval
        return super().train(False)


def load_identity_net(backend: str, path: str | None = None, *, key: str = "identity", seed: int = 0,
                      device: str | torch.device = "cpu") -> IdentityEmbedder:
    """The identity embedder of `backend` ("arcface": a local TorchScript or ONNX file at `path`;
    "tiny": random, seeded). Nothing is downloaded; a missing file fails naming `{key}.path`."""
    if backend == "tiny":
        return IdentityEmbedder(TinyIdentityNet(seed=seed)).to(device)
    if backend != "arcface":
        raise ConfigError(f"config key '{key}.backend' must be 'arcface' or 'tiny', not {backend!r}")
    if not path or not Path(path).is_file():
        raise ConfigError(f"config key '{key}.path' = {path!r}: give a local ArcFace file (TorchScript .pt, or "
                          "w600k_r50.onnx with the onnx2torch package installed); nothing is downloaded")
    if str(path).endswith(".onnx"):
        try:
            from onnx2torch import convert
        except ImportError:
            raise ConfigError(f"config key '{key}.path' is an ONNX file: converting it to torch needs the "
                              "`onnx2torch` package (pip install onnx2torch), or give a TorchScript export") from None
        net = convert(str(path))
    else:
        import warnings

        with warnings.catch_warnings():  # torch deprecates TorchScript; ArcFace exports come in it
            warnings.simplefilter("ignore", FutureWarning)
            net = torch.jit.load(str(path), map_location="cpu")
    return IdentityEmbedder(net).to(device)
