"""The X-Dub Stage I DiT inpainter (factory/models/dit_inpainter.py), its frame-wise audio
attention and its flow-matching loss and sampler (factory/models/flow_matching.py), on tiny
randomly initialised configs: a Wan transformer of 2 blocks, and diffusers' tiny AutoencoderKLWan
where pixels are involved."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel

from factory.config import ConfigError
from factory.models.audio_attention import FrameAudioAttention, group_audio_by_latent_frame
from factory.models.dit_inpainter import (TINY_DIT, DiTInpainter, InpaintLatents, encode_references,
                                          mask_to_latent_channels, mask_to_latent_weight, prepare_latents)
from factory.models.flow_matching import flow_matching_loss, generate_long, sample, shift_flow_time

B, C, L, H, W = 2, 4, 7, 4, 4  # latents: 7 latent frames = 25 video frames
T = 25
N = 4
AUDIO_W, AUDIO_D = TINY_DIT["audio_window"], TINY_DIT["audio_dim"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: a second intra-op thread only adds spin-waiting on a busy 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(seed: int = 0, **overrides) -> DiTInpainter:
    torch.manual_seed(seed)
    return DiTInpainter(**{**TINY_DIT, **overrides}).eval()


def random_latents(seed: int = 1, batch: int = B) -> InpaintLatents:
    g = torch.Generator().manual_seed(seed)
    face = torch.zeros(batch, 1, L, H, W)
    face[..., 2:, 1:3] = 1  # lower middle of the latent grid
    lip = torch.zeros(batch, 1, L, H, W)
    lip[..., 3, 1:3] = 1  # inside the face
    return InpaintLatents(
        target=torch.randn(batch, C, L, H, W, generator=g), background=torch.randn(batch, C, L, H, W, generator=g),
        mask=face.expand(batch, 4, L, H, W).clone(), references=torch.randn(batch, C, N, H, W, generator=g),
        audio_features=torch.randn(batch, T, AUDIO_W, AUDIO_D, generator=g), face_weight=face, lip_weight=lip)


def run(model: DiTInpainter, z: InpaintLatents, t: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    kwargs.setdefault("audio_features", z.audio_features)
    t = torch.full((z.target.shape[0],), 0.7) if t is None else t
    with torch.no_grad():
        return model(z.target, t, z.background, z.mask, z.references, **kwargs)


def perturb_(*params: torch.nn.Parameter, seed: int = 5) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


# 1. the model -----------------------------------------------------------------------------------

def test_forward_gives_the_target_velocity_shape_and_captures_its_config():
    model = tiny_model()
    v = run(model, random_latents())
    assert v.shape == (B, C, L, H, W)
    assert torch.isfinite(v).all()
    assert model.transformer.config.in_channels == 2 * C + 4  # noisy target + background + 4 mask channels
    assert model.transformer.config.out_channels == C
    assert model.config.num_reference_frames == N and model.config.motion_latent_frames == 2
    assert len(model.audio_attention) == TINY_DIT["num_layers"]


def test_background_mask_and_audio_are_ignored_at_init_and_used_once_their_weights_move():
    model, z = tiny_model(), random_latents()
    base = run(model, z)
    other = random_latents(seed=9)
    changed = InpaintLatents(**{**z.__dict__, "background": other.background, "mask": torch.rand_like(z.mask),
                                "audio_features": other.audio_features})
    assert torch.equal(run(model, changed), base)  # zero-initialised extra channels, zero audio output
    assert torch.equal(run(model, z, audio_features=None), base)

    perturb_(*[a.to_out.weight for a in model.audio_attention])
    assert not torch.allclose(run(model, z, audio_features=other.audio_features), run(model, z), atol=1e-4)
    with torch.no_grad():
        extra = model.transformer.patch_embedding.weight[:, C:]
        extra.copy_(torch.randn(extra.shape, generator=torch.Generator().manual_seed(6)) * 0.5)
    assert not torch.allclose(run(model, z, audio_features=None),
                              run(model, changed, audio_features=None), atol=1e-4)


def test_reference_and_motion_tokens_get_timestep_zero():
    model, z = tiny_model(), random_latents()
    tokens_per_frame = (H // 2) * (W // 2)
    t = torch.tensor([0.3, 0.8])
    per_token = model.token_timesteps(t, L, tokens_per_frame).reshape(B, N + L, tokens_per_frame)
    assert (per_token[:, :N] == 0).all()  # references
    assert (per_token[:, N:N + 2] == 0).all()  # 2 motion latent frames
    assert torch.equal(per_token[:, N + 2:], t[:, None, None].expand(B, L - 2, tokens_per_frame))
    no_motion = model.token_timesteps(t, L, tokens_per_frame, motion_frames=torch.tensor([0, 2]))
    no_motion = no_motion.reshape(B, N + L, tokens_per_frame)
    assert (no_motion[0, N:] == 0.3).all() and (no_motion[1, N:N + 2] == 0).all()

    seen = []  # what reaches Wan's timestep embedding: per token, t * 1000
    hook = model.transformer.condition_embedder.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    run(model, z, t=t)
    hook.remove()
    assert torch.allclose(seen[0].reshape(B, N + L, tokens_per_frame), per_token * 1000)


def test_audio_windows_group_per_latent_frame_one_plus_four_k():
    audio = torch.arange(T, dtype=torch.float32)[None, :, None, None].expand(1, T, AUDIO_W, 1)
    grouped = group_audio_by_latent_frame(audio, L)  # (1, L, 4W, 1)
    assert grouped.shape == (1, L, 4 * AUDIO_W, 1)
    assert (grouped[0, 0] == 0).all()  # latent frame 0: video frame 0 only
    for j in range(1, L):
        assert grouped[0, j, :, 0].unique().tolist() == [4 * j - 3, 4 * j - 2, 4 * j - 1, 4 * j]
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        group_audio_by_latent_frame(audio[:, :24], L)


def test_audio_attention_is_frame_local():
    torch.manual_seed(0)
    attention = FrameAudioAttention(dim=24, audio_dim=AUDIO_D, audio_tokens=4 * AUDIO_W, heads=2)
    perturb_(attention.to_out.weight)
    tokens = torch.randn(1, L * 4, 24)
    audio = torch.randn(1, L, 4 * AUDIO_W, AUDIO_D)
    edited = audio.clone()
    edited[:, 3] += 1.0
    delta = (attention(tokens, edited) - attention(tokens, audio)).abs().reshape(L, 4, 24).amax(dim=(1, 2))
    assert delta[3] > 1e-3
    assert (delta[torch.arange(L) != 3] == 0).all()


def test_model_audio_reaches_only_the_target_tokens_of_its_latent_frame():
    model, z = tiny_model(num_layers=1), random_latents(batch=1)  # one block: no later self-attention mixing
    perturb_(model.audio_attention[0].to_out.weight)
    edited = z.audio_features.clone()
    edited[:, 9:13] += 2.0  # video frames 9..12 = latent frame 3
    hidden = []  # the tokens entering Wan's output head, references included
    hook = model.transformer.norm_out.register_forward_pre_hook(lambda m, args: hidden.append(args[0]))
    before, after = run(model, z), run(model, z, audio_features=edited)
    hook.remove()
    change = (after - before).abs().amax(dim=(0, 1, 3, 4))  # per latent frame
    assert change[3] > 1e-4
    assert (change[torch.arange(L) != 3] < 1e-6).all()
    tokens_per_frame = (H // 2) * (W // 2)
    assert torch.equal(hidden[0][:, :N * tokens_per_frame], hidden[1][:, :N * tokens_per_frame])


def test_save_and_load_round_trip(tmp_path):
    model, z = tiny_model(), random_latents()
    perturb_(model.audio_attention[0].to_out.weight)
    model.save_pretrained(tmp_path / "dit")
    loaded = DiTInpainter.from_pretrained(tmp_path / "dit").eval()
    def public(m):
        return {k: v for k, v in json.loads(m.to_json_string()).items() if not k.startswith("_")}
    assert public(loaded) == public(model)
    assert torch.equal(run(loaded, z), run(model, z))


def test_from_wan_widens_a_pretrained_transformer_without_changing_its_output(tmp_path):
    torch.manual_seed(3)
    wan_kwargs = {k: TINY_DIT[k] for k in ("patch_size", "num_attention_heads", "attention_head_dim", "text_dim",
                                           "freq_dim", "ffn_dim", "num_layers", "rope_max_seq_len")}
    wan = WanTransformer3DModel(in_channels=C, out_channels=C, **wan_kwargs).eval()
    wan.save_pretrained(tmp_path / "wan" / "transformer")
    model = DiTInpainter.from_wan(tmp_path / "wan", audio_dim=AUDIO_D, audio_window=AUDIO_W).eval()
    weight = model.transformer.patch_embedding.weight
    assert weight.shape[1] == 2 * C + 4
    assert torch.equal(weight[:, :C], wan.patch_embedding.weight) and (weight[:, C:] == 0).all()

    z = random_latents()
    t = torch.tensor([0.4, 0.9])
    tokens_per_frame = (H // 2) * (W // 2)
    with torch.no_grad():
        expected = wan(torch.cat([z.references, z.target], dim=2),
                       model.token_timesteps(t, L, tokens_per_frame) * 1000,
                       torch.zeros(B, 1, TINY_DIT["text_dim"])).sample[:, :, N:]
    assert torch.allclose(run(model, z, t=t), expected, atol=1e-5)

    with pytest.raises(ConfigError, match="generator.wan_path"):
        DiTInpainter.from_wan(tmp_path / "missing", key="generator.wan_path")


# 2. latents from the contract's batch ------------------------------------------------------------

def test_masks_go_to_latent_resolution_frame_by_frame():
    mask = torch.zeros(1, 1, T, 32, 32)
    mask[:, :, 10, 20:22, 8:10] = 1  # one small blob in video frame 10 (latent frame 3 = frames 9..12, slot 1)
    channels = mask_to_latent_channels(mask, (4, 4))
    assert channels.shape == (1, 4, L, 4, 4)
    assert channels[0, 1, 3, 2, 1] == pytest.approx(4 / 64)  # area share of the 8x8 cell
    assert channels.sum() == pytest.approx(4 / 64)
    weight = mask_to_latent_weight(mask, (4, 4))
    assert weight.shape == (1, 1, L, 4, 4)
    assert weight[0, 0, 3, 2, 1] == 1 and weight.sum() == 1  # any pixel counts


class WanCodec:
    """diffusers' AutoencoderKLWan as the (encode, decode) pair the sampler uses; records encodes."""

    def __init__(self, vae: AutoencoderKLWan):
        self.vae, self.encoded = vae, []

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        self.encoded.append(video.clone())
        return self.vae.encode(video).latent_dist.mode()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents).sample


@pytest.fixture(scope="module")
def codec() -> WanCodec:
    torch.manual_seed(0)  # diffusers' own tiny Wan VAE test config: 8x spatial, 4x temporal, 16 channels
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True]).eval()
    return WanCodec(vae)


def contract_batch(frames: int = T, size: int = 16, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    face = torch.zeros(1, 1, frames, size, size)
    face[..., size // 2:, size // 4:3 * size // 4] = 1
    lip = torch.zeros_like(face)
    lip[..., 3 * size // 4:, 3 * size // 8:5 * size // 8] = 1
    return {"target": torch.rand(1, 3, frames, size, size, generator=g) * 2 - 1, "face_mask": face, "lip_mask": lip,
            "references": torch.rand(1, 3, N, size, size, generator=g) * 2 - 1,
            "audio_features": torch.randn(1, frames, AUDIO_W, AUDIO_D, generator=g)}


def test_prepare_latents_encodes_target_background_and_each_reference_alone(codec):
    batch = contract_batch()
    z = prepare_latents(batch, codec.encode)
    assert z.target.shape == z.background.shape == (1, 16, L, 2, 2)
    assert z.mask.shape == (1, 4, L, 2, 2) and z.references.shape == (1, 16, N, 2, 2)
    assert z.face_weight.shape == z.lip_weight.shape == (1, 1, L, 2, 2)
    assert set(z.lip_weight.unique().tolist()) == {0.0, 1.0}
    alone = codec.encode(batch["references"][:, :, 2:3])
    assert torch.allclose(z.references[:, :, 2:3], alone, atol=1e-6)
    assert torch.allclose(encode_references(batch["references"], codec.encode), z.references)


# 3. loss ----------------------------------------------------------------------------------------

class OracleVelocity(torch.nn.Module):
    """Knows the true velocity of a zero target (v = eps = x_t / t on noised frames) and adds a
    chosen error pattern: tests the loss's weighting, not a network."""

    def __init__(self, error: torch.Tensor):
        super().__init__()
        self.error = error
        self.config = SimpleNamespace(motion_latent_frames=2)
        self.dtype = torch.float32

    def forward(self, x_t, t, *args, **kwargs):
        return x_t / t.reshape(-1, 1, 1, 1, 1) + self.error


def test_loss_weighs_errors_inside_the_lip_mask_up():
    z = random_latents()
    z.target = torch.zeros_like(z.target)

    def loss(error, **weights):
        return flow_matching_loss(OracleVelocity(error), z, generator=torch.Generator().manual_seed(4),
                                  **weights).item()

    in_lips = z.lip_weight.expand(B, C, L, H, W).clone()
    plain = loss(in_lips, lambda_face=1.0, lambda_lip=0.0)
    assert plain > 0
    # the error sits inside the face and the lips: weight 1 + 1 + 4 instead of 1 + 1
    assert loss(in_lips, lambda_face=1.0, lambda_lip=4.0) == pytest.approx(3 * plain, rel=1e-3)
    outside = (1 - z.face_weight).expand(B, C, L, H, W).clone()
    assert loss(outside, lambda_face=1.0, lambda_lip=4.0) == pytest.approx(loss(outside, lambda_face=0, lambda_lip=0),
                                                                          rel=1e-4)
    in_motion = torch.zeros(B, C, L, H, W)
    in_motion[:, :, :2] = 1  # clean motion frames are context, never scored
    assert loss(in_motion) < 1e-6


def test_shifted_flow_time_leans_to_noise():
    t = torch.linspace(0.05, 0.95, 19)
    assert (shift_flow_time(t, 5.0) > t).all()
    assert torch.allclose(shift_flow_time(t, 1.0), t)


def test_a_short_overfit_lowers_the_loss_clearly():
    model, z = tiny_model(seed=2).train(), random_latents(batch=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def held_loss():
        with torch.no_grad():
            return flow_matching_loss(model, z, lambda_lip=1.0, generator=torch.Generator().manual_seed(123)).item()

    before = held_loss()
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        loss = flow_matching_loss(model, z, lambda_lip=1.0, audio_drop_prob=0.1, motion_drop_prob=0.1, generator=g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = held_loss()
    assert after < 0.5 * before, (before, after)


def test_gradient_checkpointing_gives_the_same_gradients():
    model, z = tiny_model().train(), random_latents()
    perturb_(*[a.to_out.weight for a in model.audio_attention])

    def grads():
        model.zero_grad()
        flow_matching_loss(model, z, generator=torch.Generator().manual_seed(0)).backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    model.enable_gradient_checkpointing()
    assert model.gradient_checkpointing
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, grads()))


# 4. sampler -------------------------------------------------------------------------------------

def test_sampler_is_seeded_honours_steps_and_keeps_motion_frames_clean():
    model, z = tiny_model(), random_latents(batch=1)
    perturb_(*[a.to_out.weight for a in model.audio_attention])
    calls = []
    model.register_forward_pre_hook(lambda m, args, kwargs: calls.append(kwargs["audio_features"] is None),
                                    with_kwargs=True)
    motion = z.target[:, :, :2]

    def draw(seed, **kwargs):
        return sample(model, z.background, z.mask, z.references, z.audio_features, motion=motion,
                      generator=torch.Generator().manual_seed(seed), **kwargs)

    first = draw(7, steps=3)
    assert len(calls) == 3 and not any(calls)
    assert first.shape == (1, C, L, H, W)
    assert torch.equal(first, draw(7, steps=3))
    assert not torch.allclose(first, draw(8, steps=3))
    assert torch.equal(first[:, :, :2], motion)
    calls.clear()
    guided = draw(7, steps=4, guidance_scale=3.0)
    assert len(calls) == 8 and sum(calls) == 4  # one unconditional (no audio) call per step
    assert not torch.allclose(guided, draw(7, steps=4))


def test_generate_long_bridges_segments_with_five_motion_frames(codec):
    model = tiny_model(latent_channels=16)
    batch = contract_batch(frames=45)
    inputs = (batch["target"], batch["face_mask"], batch["audio_features"], batch["references"])
    codec.encoded.clear()
    out = generate_long(model, codec, *inputs, steps=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 45, 16, 16) and out.abs().max() <= 1
    # the second segment (frames 20..44) started from the first one's last 5 output frames
    assert any(v.shape[2] == 5 and torch.equal(v, out[:, :, 20:25]) for v in codec.encoded)
    # segmenting does not change the first segment: a 25-frame clip with the same seed is its prefix
    short = generate_long(model, codec, *(x[:, :, :25] if x.dim() == 5 else x[:, :25] for x in inputs),
                          steps=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(short, out[:, :, :25])
    assert not torch.equal(out[:, :, 25:30], out[:, :, 20:25])


def test_generate_long_pads_a_short_tail_and_can_start_from_the_source_motion(codec):
    model = tiny_model(latent_channels=16)
    batch = contract_batch(frames=30)  # 25 + a 5-frame tail: its segment is 5 motion + 8 (padded) frames
    codec.encoded.clear()
    out = generate_long(model, codec, batch["target"], batch["face_mask"], batch["audio_features"],
                        batch["references"], steps=2, generator=torch.Generator().manual_seed(0),
                        first_motion="source")
    assert out.shape == (1, 3, 30, 16, 16)
    assert any(torch.equal(v, batch["target"][:, :, :5]) for v in codec.encoded)  # the source's own motion
    assert any(v.shape[2] == 13 for v in codec.encoded)  # the tail: 10 frames padded to 1 + 4k
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        generate_long(model, codec, batch["target"], batch["face_mask"], batch["audio_features"],
                      batch["references"], segment_frames=24)


def test_the_recipe_grows_the_face_mask_by_its_pixels_and_leaves_the_rest_of_the_batch():
    from factory.trainers.dit_recipe import grow_face_mask

    face = torch.zeros(1, 1, 3, 16, 16)
    face[:, :, :, 8, 8] = 1
    batch = {"face_mask": face, "target": torch.ones(1)}
    assert grow_face_mask(batch, 0) is batch
    grown = grow_face_mask(batch, 2)
    assert grown["target"] is batch["target"] and torch.equal(face, batch["face_mask"])  # no in-place change
    assert grown["face_mask"].shape == face.shape
    assert grown["face_mask"][0, 0, 1].nonzero().tolist() == [[y, x] for y in range(6, 11) for x in range(6, 11)]
