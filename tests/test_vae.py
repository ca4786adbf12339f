"""The VAE wrappers (factory/models/vae.py): one encode/decode API over the Wan video VAE and the
image VAEs, from tiny random configs and from saved local folders, plus the latent cache."""

from __future__ import annotations

import pytest
import torch

from factory.config import ConfigError

pytest.importorskip("diffusers", reason="the VAE wrappers need diffusers (see pyproject)")

from factory.models.vae import VAE, LatentCache, VAEConfig  # noqa: E402


def video(b=1, f=25, size=64, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # smooth content: a tiny random VAE still reconstructs low frequencies roughly
    x = torch.rand(b, 3, f, size // 8, size // 8, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(x, size=(f, size, size), mode="trilinear")


@pytest.fixture(scope="module")
def wan():
    return VAE(VAEConfig(kind="wan", tiny={}, device="cpu"))


@pytest.fixture(scope="module", params=["kl", "taesd"])
def image_vae(request):
    return VAE(VAEConfig(kind=request.param, tiny={}, device="cpu"))


def test_wan_maps_25_frames_to_7_latent_frames_and_back(wan):
    x = video()
    z = wan.encode(x)
    assert (wan.latent_channels, wan.spatial_factor, wan.temporal_factor) == (16, 8, 4)
    assert z.shape == (1, 16, 7, 8, 8) and wan.latent_frames(25) == 7
    y = wan.decode(z)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1


def test_wan_latents_are_the_posterior_mean_normalised_by_its_config(wan):
    x = video(b=2, f=5, size=32)
    z = wan.encode(x)
    raw = wan.model.encode(x).latent_dist.mode()  # a second encode: deterministic
    mean = torch.tensor(wan.model.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(wan.model.config.latents_std).view(1, -1, 1, 1, 1)
    assert torch.allclose(z, (raw - mean) / std, atol=1e-5)
    assert z[0].std() > 0.01 and not torch.allclose(z[0], z[1])  # two videos, two latents
    assert torch.allclose(wan.decode(z), wan.model.decode(raw).sample.clamp(-1, 1), atol=1e-5)


def test_wan_refuses_a_frame_count_that_is_not_4k_plus_1(wan):
    with pytest.raises(ValueError, match="4k \\+ 1"):
        wan.encode(video(f=24))


def test_an_image_vae_encodes_each_frame_on_its_own(image_vae):
    x = video(b=2, f=5)
    z = image_vae.encode(x)
    assert image_vae.temporal_factor == 1 and image_vae.spatial_factor == 8
    assert z.shape == (2, image_vae.latent_channels, 5, 8, 8)
    single = image_vae.encode(x[:, :, 3:4])  # a frame alone gives the same latent
    assert torch.allclose(z[:, :, 3:4], single, atol=1e-5)
    y = image_vae.decode(z)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    assert torch.allclose(image_vae.decode(z[:, :, 2:3]), y[:, :, 2:3], atol=1e-5)
    chunked = VAE(VAEConfig(kind=image_vae.config.kind, tiny={}, device="cpu", frame_chunk=3))
    assert torch.allclose(chunked.encode(x), z, atol=1e-5)  # same seed, same weights, any chunking


def test_the_kl_vae_scales_its_latents():
    vae = VAE(VAEConfig(kind="kl", tiny={"scaling_factor": 0.5, "shift_factor": 0.1}, device="cpu"))
    x = video(f=1)
    raw = vae.model.encode(x[:, :, 0]).latent_dist.mode()
    assert torch.allclose(vae.encode(x)[:, :, 0], (raw - 0.1) * 0.5, atol=1e-5)


def test_sampling_is_optional_and_draws_from_the_posterior():
    vae = VAE(VAEConfig(kind="kl", tiny={}, deterministic=False, device="cpu"))
    x = video(f=2)
    a = vae.encode(x, generator=torch.Generator().manual_seed(1))
    b = vae.encode(x, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(a, b)


def test_a_saved_folder_loads_and_round_trips_like_the_original(wan, tmp_path):
    wan.model.save_pretrained(tmp_path / "wan_vae")
    loaded = VAE(VAEConfig(kind="wan", path=str(tmp_path / "wan_vae"), device="cpu"))
    x = video(f=5, size=32)
    assert torch.allclose(loaded.encode(x), wan.encode(x), atol=1e-5)
    assert loaded.id != wan.id
    wan.model.save_pretrained(tmp_path / "pipe" / "vae")
    sub = VAE(VAEConfig(kind="wan", path=str(tmp_path / "pipe"), subfolder="vae", device="cpu"))
    assert sub.latent_channels == 16


def test_a_missing_folder_names_the_config_key(tmp_path):
    with pytest.raises(ConfigError, match=r"'dit\.vae\.path'"):
        VAE(VAEConfig(kind="wan", path=str(tmp_path / "missing")), key="dit.vae")
    with pytest.raises(ConfigError, match=r"'vae\.path' is not set"):
        VAE(VAEConfig(kind="kl"))
    with pytest.raises(ConfigError, match=r"'vae\.kind'"):
        VAE(VAEConfig(kind="sdxl", tiny={}))


def test_the_latent_cache_returns_what_was_encoded(wan, tmp_path):
    cache = LatentCache(tmp_path / "latents")
    x = video(b=2, f=5, size=32)
    keys = ["demo00_c0000@00005", "demo00_c0000@00030"]
    first = wan.encode_cached(x, keys, cache)
    assert torch.allclose(first, wan.encode(x))
    assert sorted(p.name for p in (tmp_path / "latents" / wan.id).iterdir()) == [f"{k}.safetensors" for k in keys]
    # a cached key is read, not re-encoded: other pixels under the same key give the cached latent
    again = wan.encode_cached(torch.zeros_like(x), keys, cache)
    assert torch.equal(again, first)
    sampling = VAE(VAEConfig(kind="wan", tiny={}, deterministic=False, device="cpu"))
    with pytest.raises(ValueError, match="deterministic"):
        sampling.encode_cached(x, keys, cache)
