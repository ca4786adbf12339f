"""The frozen nets behind X-Dub Stage II's auxiliary losses: the identity embedder (its alignment
warp puts the template's keypoints where ArcFace expects them; a TorchScript ArcFace loads as the
"arcface" backend; gradients reach the frames) and the SyncNet loss with either SyncNet layout."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from factory.config import ConfigError
from factory.models.identity_net import ARCFACE_DST, TinyIdentityNet, alignment_grid, load_identity_net
from factory.models.sync_loss import sync_loss, window_starts


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def test_the_alignment_warp_takes_template_keypoints_to_arcface_places():
    """Each ArcFace keypoint's output pixel reads the crop next to the same template keypoint (the
    template's proportions differ from ArcFace's: a similarity fit leaves ~3 px at 64 px; a flipped
    or transposed warp would land on another keypoint)."""
    from factory.faces.embedders import template_keypoints

    size = 64
    grid = alignment_grid(size)[0]  # (112, 112, 2): where each output pixel reads the crop
    template = template_keypoints(size)
    for i, (x, y) in enumerate(ARCFACE_DST):
        got = (grid[int(y), int(x)].numpy() + 1) / 2 * size  # crop pixel coords of that output pixel
        distances = np.linalg.norm(template - got, axis=1)
        assert distances.argmin() == i and distances[i] < 4.0, (i, distances)


def test_a_torchscript_arcface_loads_and_passes_gradients(tmp_path):
    path = tmp_path / "arcface.pt"
    with warnings.catch_warnings():  # torch deprecates TorchScript; ArcFace exports still come in it
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(TinyIdentityNet(seed=5)).save(str(path))
    scripted = load_identity_net("arcface", str(path))
    tiny = load_identity_net("tiny", seed=5)
    crops = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    emb = scripted(crops)
    assert torch.allclose(emb, tiny(crops), atol=1e-6) and torch.allclose(emb.norm(dim=1), torch.ones(2))
    (1 - (emb[0] * emb[1]).sum()).backward()
    assert crops.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="'identity.path'"):
        load_identity_net("arcface", str(tmp_path / "missing.pt"))
    with pytest.raises(ConfigError, match="'identity.backend'"):
        load_identity_net("dlib")


def sync_gradient(net, frames: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    video = (torch.rand(2, 3, frames, size, size) * 2 - 1).requires_grad_(True)
    audio = torch.randn(2, frames * 640) * 0.1
    starts = window_starts(2, frames, 1, net.window, torch.Generator().manual_seed(0))
    loss = sync_loss(net, video, audio, starts)
    loss.sum().backward()
    return loss, video.grad


def test_sync_loss_with_a_stable_syncnet():
    from factory.models.syncnet import SyncNet, SyncNetConfig

    torch.manual_seed(0)
    net = SyncNet(SyncNetConfig(frames=5, image_size=32, visual_channels=[8, 16], audio_channels=[8, 16], embed_dim=16,
                                norm_groups=4, stem_stride=2)).eval().requires_grad_(False)
    loss, grad = sync_gradient(net, 9, 32)
    assert loss.shape == (2,) and torch.all(loss > 0)  # -log p, p < 1
    assert grad[:, :, 0].abs().sum() == 0 and grad.abs().sum() > 0  # frame 0 lies before every window


def test_sync_loss_with_syncnet_pythons_model():
    from factory.models.syncnet_s import SyncNetS

    torch.manual_seed(0)
    net = SyncNetS().eval().requires_grad_(False)
    loss, grad = sync_gradient(net, 7, 32)
    assert loss.shape == (2,) and torch.all((loss >= 0) & (loss <= 2))  # 1 - cos
    assert grad[:, :, 0].abs().sum() == 0 and grad.abs().sum() > 0


def test_a_window_must_fit_the_generated_frames():
    with pytest.raises(ValueError, match="does not fit"):
        window_starts(1, 9, 5, 5, None)
