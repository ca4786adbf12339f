"""factory/metrics' eval measures as pure functions: PSNR/SSIM on pixels, the Fréchet distance
(checked against its closed form and torchmetrics), FID/FVD through small local feature networks,
LPIPS through lpips' shipped heads on a backbone loaded from a local file."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from factory.eval.models import MissingWeights, load_lpips, load_sync
from factory.metrics.frechet import feature_distance, fid, frechet_distance, fvd
from factory.metrics.perceptual import lpips_distance
from factory.metrics.pixels import psnr, ssim


def clip(seed: int = 0, n: int = 6, size: int = 48) -> np.ndarray:
    """Smooth random images (blurred noise), so SSIM and LPIPS see structure, not only noise."""
    import cv2

    rng = np.random.default_rng(seed)
    frames = [cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3)).astype(np.float32), (0, 0), 2)
              for _ in range(n)]
    return np.clip((np.stack(frames) - 128) * 3 + 128, 0, 255).astype(np.uint8)


def test_psnr_is_infinite_for_identical_clips_and_matches_its_formula():
    a = clip()
    assert psnr(a, a.copy()) == math.inf
    b = np.clip(a.astype(int) + 5, 0, 255).astype(np.uint8)
    mse = np.mean((a.astype(float) - b) ** 2)
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 / mse))
    with pytest.raises(ValueError):
        psnr(a, a[:, :-1])


def test_ssim_is_one_for_identical_clips_and_drops_with_noise():
    a = clip()
    assert ssim(a, a.copy()) == pytest.approx(1.0)
    noisy = np.clip(a + np.random.default_rng(1).normal(0, 25, a.shape), 0, 255).astype(np.uint8)
    assert ssim(a, noisy) < 0.9


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    mu_a, mu_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    sd_a, sd_b = np.array([1.0, 2.0, 0.5]), np.array([2.0, 2.0, 1.5])
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((sd_a - sd_b) ** 2)
    assert frechet_distance(mu_a, np.diag(sd_a**2), mu_b, np.diag(sd_b**2)) == pytest.approx(expected)


def test_frechet_distance_of_feature_sets_is_zero_for_identical_sets_and_grows_with_a_shift():
    x = np.random.default_rng(0).normal(size=(200, 8))
    assert feature_distance(x, x.copy()) == pytest.approx(0, abs=1e-6)
    shifted = [feature_distance(x, x + d) for d in (0.5, 1.0, 2.0)]
    assert shifted == pytest.approx([8 * 0.25, 8 * 1.0, 8 * 4.0])  # |shift|^2, covariance unchanged


class TinyImageNet(nn.Module):
    """A small random feature network standing in for Inception: (N, 3, S, S) 0..255 -> (N, 8)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 5, stride=2)

    def forward(self, x):
        return torch.tanh(self.conv(x.float() / 255 - 0.5)).mean(dim=(2, 3)) * 10


class TinyVideoNet(nn.Module):
    """A small random video network standing in for I3D: (B, 3, T, S, S) -1..1 -> (B, 6)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(3, 6, 3, stride=2)

    def forward(self, x):
        return torch.tanh(self.conv(x)).mean(dim=(2, 3, 4)) * 10


def test_fid_through_a_local_network_is_zero_on_identical_frames_and_grows_with_a_change():
    net = TinyImageNet().eval()
    frames = np.concatenate([clip(seed) for seed in range(8)])  # 48 frames
    assert fid(net, frames, frames.copy(), size=48) == pytest.approx(0, abs=1e-6)
    darker = (frames * 0.7).astype(np.uint8)
    much_darker = (frames * 0.4).astype(np.uint8)
    assert 0 < fid(net, frames, darker, size=48) < fid(net, frames, much_darker, size=48)


def test_fid_agrees_with_torchmetrics_on_the_same_feature_network():
    tm = pytest.importorskip("torchmetrics.image.fid")
    net = TinyImageNet().eval()
    real = np.concatenate([clip(seed) for seed in range(8)])
    fake = np.concatenate([clip(seed) for seed in range(8, 16)])
    metric = tm.FrechetInceptionDistance(feature=net)
    metric.update(torch.from_numpy(real).permute(0, 3, 1, 2), real=True)
    metric.update(torch.from_numpy(fake).permute(0, 3, 1, 2), real=False)
    assert fid(net, fake, real, size=48) == pytest.approx(float(metric.compute()), rel=1e-3)


def test_fvd_through_a_local_video_network_is_zero_on_identical_clips_and_grows_with_a_change():
    net = TinyVideoNet().eval()
    clips = np.stack([clip(seed, n=8, size=32) for seed in range(12)])  # 12 clips of 8 frames
    assert fvd(net, clips, clips.copy(), size=32) == pytest.approx(0, abs=1e-6)
    frozen = np.repeat(clips[:, :1], 8, axis=1)  # the same pictures, no motion
    assert fvd(net, clips, frozen, size=32) > 0.1


@pytest.fixture(scope="module")
def squeeze_backbone(tmp_path_factory):
    """A randomly initialised torchvision squeezenet1_1 saved as a state dict: the file format of
    the real ImageNet weights, so the real loading path runs (no real weights offline)."""
    from torchvision.models import squeezenet1_1

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("lpips") / "squeezenet1_1.pth"
    torch.save(squeezenet1_1(weights=None).state_dict(), path)
    return path


def test_lpips_loads_its_backbone_from_a_local_file_and_is_zero_on_identical_clips(squeeze_backbone):
    model = load_lpips("squeeze", str(squeeze_backbone))
    state = torch.load(squeeze_backbone, weights_only=True)
    assert torch.equal(model.net.slice1[0].weight, state["features.0.weight"])  # really loaded
    a = clip(size=64)
    assert lpips_distance(model, a, a.copy()) == pytest.approx(0, abs=1e-7)
    noisy = np.clip(a + np.random.default_rng(1).normal(0, 40, a.shape), 0, 255).astype(np.uint8)
    assert lpips_distance(model, a, noisy) > 0


def test_lpips_without_backbone_weights_names_the_key(tmp_path, squeeze_backbone):
    with pytest.raises(MissingWeights, match="eval.lpips_backbone_path is not set"):
        load_lpips("alex", None)
    with pytest.raises(MissingWeights, match="is not a file"):
        load_lpips("alex", str(tmp_path / "absent.pth"))
    with pytest.raises(MissingWeights, match="eval.lpips_backbone_path"):  # squeezenet weights for alexnet
        load_lpips("alex", str(squeeze_backbone))


def test_sync_without_weights_names_the_key():
    with pytest.raises(MissingWeights, match="eval.syncnet_path is not set"):
        load_sync(None)
