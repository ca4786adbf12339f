"""The FlashLips lip-pose encoder: a 12-D vector that says how the lips are posed in one frame.

FlashLips conditions its latent editor on a compact lip pose rather than on audio: 8 dimensions
from an expression branch plus a 4-D residual read from a mouth crop by a small CNN, trained
jointly with the editor (factory/models/latent_editor.py). Here the expression branch is an MLP
on the mouth landmarks (Face Mesh lip indices, K x 2 in [0, 1] crop coordinates), centred on
their mean so head translation does not enter the pose; the residual branch sees the mouth crop
of the frame (a box around the same landmarks, resampled with `grid_sample`) and catches what
landmarks miss (teeth, tongue, lip texture). The 4-D bottleneck keeps it from passing the mouth's
appearance through.

Per frame: inputs are (N, K, 2) landmarks and (N, 3, S, S) frames in [-1, 1] with N = B * T.
Sizes are constructor arguments (diffusers style: `register_to_config`, so `save_pretrained` /
`from_pretrained` work on a folder), so a tiny one trains on CPU in a test.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn


# 1. the mouth crop ------------------------------------------------------------------------------

def mouth_boxes(mouth_landmarks: torch.Tensor, margin: float, min_side: float) -> torch.Tensor:
    """(N, 3) square boxes (centre x, centre y, side) in [0, 1] units around each frame's mouth:
    the landmarks' bounding box grown by `margin` of its longer side on every edge, at least `min_side`."""
    lo, hi = mouth_landmarks.amin(dim=1), mouth_landmarks.amax(dim=1)
    centre = (lo + hi) / 2
    side = (hi - lo).amax(dim=1) * (1 + 2 * margin)
    return torch.cat([centre, side.clamp(min=min_side)[:, None]], dim=1)


def crop_boxes(frames: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, size, size): each frame's box resampled bilinearly (zeros outside the frame).
    Differentiable in the frames; the box itself is taken as given (no gradient)."""
    boxes = boxes.detach().to(frames.dtype)
    n = frames.shape[0]
    theta = frames.new_zeros(n, 2, 3)
    # grid_sample's coordinates run -1..1 across the frame: a [0, 1] point p sits at 2p - 1,
    # and a box of side s spans s in [0, 1] units, so 2s in grid units (half-extent s)
    theta[:, 0, 0] = boxes[:, 2]
    theta[:, 1, 1] = boxes[:, 2]
    theta[:, :, 2] = 2 * boxes[:, :2] - 1
    grid = F.affine_grid(theta, [n, frames.shape[1], size, size], align_corners=False)
    return F.grid_sample(frames, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# 2. the encoder -------------------------------------------------------------------------------

class LipPoseEncoder(ModelMixin, ConfigMixin):
    """(mouth landmarks, frames) -> (N, expression_dim + residual_dim) lip pose (8 + 4 = 12)."""

    @register_to_config
    def __init__(
        self,
        num_landmarks: int = 40,  # Face Mesh's lip indices (FACEMESH_LIPS has 40)
        expression_dim: int = 8,
        residual_dim: int = 4,
        hidden_dim: int = 128,
        landmark_scale: float = 10.0,  # centred landmarks times this: a mouth spans ~0.2 of the crop -> ~+-1
        crop_size: int = 64,
        crop_margin: float = 0.25,  # share of the mouth's longer side added on every edge of the crop
        crop_min_side: float = 0.05,  # a closed or lost mouth still gets a crop this big (of the frame side)
        cnn_channels: tuple[int, ...] = (32, 64, 128),
        norm_num_groups: int = 8,
    ):
        super().__init__()
        self.expression = nn.Sequential(
            nn.Linear(num_landmarks * 2, hidden_dim), nn.SiLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.SiLU(),
            nn.Linear(hidden_dim, expression_dim),
        )
        layers, channels = [], 3
        for out in cnn_channels:  # each stage halves the crop
            layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1), nn.GroupNorm(min(norm_num_groups, out), out),
                       nn.SiLU()]
            channels = out
        self.cnn = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, residual_dim))

    @property
    def pose_dim(self) -> int:
        return self.config.expression_dim + self.config.residual_dim

    def mouth_crop(self, mouth_landmarks: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, crop_size, crop_size) crops around each frame's mouth."""
        cfg = self.config
        boxes = mouth_boxes(mouth_landmarks.float(), cfg.crop_margin, cfg.crop_min_side)
        return crop_boxes(frames, boxes, cfg.crop_size)

    def forward(self, mouth_landmarks: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """mouth_landmarks (N, K, 2) in [0, 1], frames (N, 3, S, S) in [-1, 1] -> (N, 12):
        the expression branch's 8 values, then the crop CNN's 4."""
        if mouth_landmarks.shape[1:] != (self.config.num_landmarks, 2):
            raise ValueError(f"mouth_landmarks must be (N, {self.config.num_landmarks}, 2), got "
                             f"{tuple(mouth_landmarks.shape)}")
        dtype = next(self.parameters()).dtype
        centred = mouth_landmarks - mouth_landmarks.mean(dim=1, keepdim=True)
        expression = self.expression((centred * self.config.landmark_scale).flatten(1).to(dtype))
        residual = self.cnn(self.mouth_crop(mouth_landmarks, frames.to(dtype)))
        return torch.cat([expression, residual], dim=1)
