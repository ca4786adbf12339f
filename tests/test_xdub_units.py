"""X-Dub Stage II's parts, each against what it must do: the shifted RoPE (reference token at
target position + (h', w'), same frame), the shifted logit-normal flow time (KS against its
closed-form CDF, medians moving as the shift says), tau truncation, LoRA experts switched on by
flow time (in the sampler too), and which frames and samples each loss may see."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

from factory.models.dit_inpainter import TINY_DIT
from factory.models.lora_experts import (LoraExpertConfig, activate_expert, add_expert, expert_for_time, expert_state,
                                         train_only)
from factory.models.rope_shift import ShiftedRope, token_positions
from factory.models.timestep_sampling import (PHASE_SHIFT, one_step_x0, sample_flow_time, shifted_logit_normal_cdf,
                                              shifted_logit_normal_quantile, truncated_tau)
from factory.models.xdub_stage2 import FlowStep, PairLatents, XDubEditor, sample_editor, silent_mean, weighted_flow_loss


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def editor(frames: int = 3, seed: int = 0) -> XDubEditor:
    """A tiny editor whose zero-initialised paths are perturbed, so every input reaches the output."""
    torch.manual_seed(seed)
    model = XDubEditor(**{**TINY_DIT, "latent_channels": 4, "num_reference_frames": frames, "motion_latent_frames": 1})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


# -- RoPE --------------------------------------------------------------------------------------

def test_reference_positions_are_target_positions_shifted_in_space_not_time():
    frames, h, w, shift = 3, 2, 4, (1, 4)
    pos = token_positions(frames, frames, h, w, shift)
    ref, target = pos[:frames * h * w], pos[frames * h * w:]
    assert torch.equal(ref[:, 0], target[:, 0])  # the same frame index: temporally aligned
    assert torch.equal(ref[:, 1:], target[:, 1:] + torch.tensor(shift))
    assert torch.equal(target, torch.stack(torch.meshgrid(torch.arange(frames), torch.arange(h), torch.arange(w),
                                                          indexing="ij"), -1).reshape(-1, 3))


def test_shifted_rope_gives_reference_tokens_the_frequencies_of_the_shifted_place():
    """Against Wan's own RoPE on a canvas twice as wide: a target token's rotation is Wan's at
    (k, i, j), a reference token's Wan's at (k, i, j + w)."""
    wan = WanRotaryPosEmbed(attention_head_dim=12, patch_size=(1, 2, 2), max_seq_len=32)
    frames, h, w = 3, 2, 3  # tokens per axis (latents 2x larger: patch 2)
    rope = ShiftedRope(wan, reference_frames=frames)  # default shift (0, w)
    cos, sin = rope(torch.zeros(1, 4, 2 * frames, 2 * h, 2 * w))
    wide_cos, wide_sin = wan(torch.zeros(1, 4, frames, 2 * h, 4 * w))  # (1, frames*h*2w, 1, D)
    wide_cos, wide_sin = wide_cos.reshape(frames, h, 2 * w, -1), wide_sin.reshape(frames, h, 2 * w, -1)
    n = frames * h * w
    assert cos.shape == (1, 2 * n, 1, 12)
    assert torch.equal(cos[0, :n, 0].reshape(frames, h, w, -1), wide_cos[:, :, w:])
    assert torch.equal(sin[0, :n, 0].reshape(frames, h, w, -1), wide_sin[:, :, w:])
    assert torch.equal(cos[0, n:, 0].reshape(frames, h, w, -1), wide_cos[:, :, :w])
    with pytest.raises(ValueError, match="rope_max_seq_len"):
        ShiftedRope(wan, frames, shift=(0, 40))(torch.zeros(1, 4, 2 * frames, 2 * h, 2 * w))


def test_the_editor_uses_the_shifted_rope():
    model = editor()
    assert isinstance(model.transformer.rope, ShiftedRope)
    x, ref = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 4, 3, 8, 8)
    shifted = model(x, torch.tensor([0.5]), ref)
    model.transformer.rope.shift = (0, 0)  # references on top of the target: another input to the blocks
    assert not torch.allclose(model(x, torch.tensor([0.5]), ref), shifted)


# -- flow time -----------------------------------------------------------------------------------

@pytest.mark.parametrize("phase", [1, 2, 3])
def test_shifted_logit_normal_matches_its_cdf(phase):
    shift, n = PHASE_SHIFT[phase], 20000
    t = sample_flow_time(n, shift=shift, generator=torch.Generator().manual_seed(phase)).double().sort().values
    cdf = shifted_logit_normal_cdf(t, shift)
    ks = float(torch.maximum((torch.arange(1, n + 1) / n - cdf).abs(), (cdf - torch.arange(n) / n).abs()).max())
    assert ks < 0.015, ks  # 1.95 / sqrt(n) = 0.0138 at p = 0.001
    wrong = shifted_logit_normal_cdf(t, shift * 2)  # the check can fail: another shift is far off
    assert float((torch.arange(1, n + 1) / n - wrong).abs().max()) > 0.05
    median = shifted_logit_normal_quantile(0.5, shift)
    assert median == pytest.approx(shift * 0.5 / (1 + (shift - 1) * 0.5))
    assert float(t.median()) == pytest.approx(median, abs=0.01)


def test_phase_shifts_move_the_times_from_noisy_to_clean():
    medians = [float(sample_flow_time(4000, shift=PHASE_SHIFT[p], generator=torch.Generator().manual_seed(0)).median())
               for p in (1, 2, 3)]
    assert medians[0] > 0.8 and 0.55 < medians[1] < 0.65 and medians[2] < 0.2, medians


def test_tau_is_truncated_and_the_one_step_estimate_exact_below_it():
    t = torch.tensor([0.2, 0.6, 0.9])
    assert torch.equal(truncated_tau(t), torch.tensor([0.2, 0.6, 0.6]))
    x0, eps = torch.randn(3, 4, 2, 2, 2), torch.randn(3, 4, 2, 2, 2)
    tt = t.reshape(3, 1, 1, 1, 1)
    z_t, v = (1 - tt) * x0 + tt * eps, eps - x0
    x0_hat = one_step_x0(z_t, v, t)
    assert torch.allclose(x0_hat[:2], x0[:2], atol=1e-6)
    assert torch.allclose(x0_hat[2], x0[2] + 0.3 * v[2], atol=1e-6)  # 0.9 - 0.6 of the way left


# -- LoRA experts ----------------------------------------------------------------------------------

def test_expert_ranges():
    for t, want in [(0.0, "texture"), (0.2, "texture"), (0.3, "texture"), (0.35, None), (0.4, "lip"), (0.5, "lip"),
                    (0.8, "lip"), (0.9, None), (1.0, None)]:
        assert expert_for_time(t) == want, t
    assert expert_for_time(0.2, available=["lip"]) is None  # an expert the model lacks is never chosen


def with_experts() -> tuple[XDubEditor, dict]:
    model = editor()
    cfg = LoraExpertConfig(rank=2, alpha=2.0)
    x, ref, audio = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 4, 3, 8, 8), torch.randn(1, 9, 2, 8)
    base = {t: model(x, torch.tensor([t]), ref, audio) for t in (0.2, 0.5, 0.9)}
    add_expert(model, "lip", cfg)
    add_expert(model, "texture", cfg)
    assert expert_state(model) is None and all(torch.equal(model(x, torch.tensor([t]), ref, audio), v)
                                               for t, v in base.items())  # new experts change nothing
    with torch.no_grad():  # make both experts do something
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return model, dict(x=x, ref=ref, audio=audio, base=base)


def test_at_mid_noise_only_the_lip_expert_is_on():
    model, d = with_experts()

    def out(t):
        activate_expert(model, expert_for_time(t))
        return model(d["x"], torch.tensor([t]), d["ref"], d["audio"])

    assert not torch.allclose(out(0.5), d["base"][0.5]) and expert_state(model) == "lip"
    assert not torch.allclose(out(0.2), d["base"][0.2]) and expert_state(model) == "texture"
    assert torch.equal(out(0.9), d["base"][0.9]) and expert_state(model) is None
    activate_expert(model, "texture")  # the texture expert alone at t = 0.5 gives another output than the lip one
    assert not torch.allclose(model(d["x"], torch.tensor([0.5]), d["ref"], d["audio"]), out(0.5))


def test_the_sampler_switches_experts_by_step():
    model, d = with_experts()
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append((float(args[1][0]), expert_state(m))))
    activate_expert(model, "lip")
    sample_editor(model, d["ref"], d["audio"], steps=10, shift=1.0, generator=torch.Generator().manual_seed(0))
    assert [s for _, s in seen] == [expert_for_time(t) for t, _ in seen]
    assert {s for _, s in seen} == {None, "lip", "texture"}
    assert expert_state(model) == "lip"  # left as it was found


def test_train_only_one_expert():
    model, _ = with_experts()
    trainable = train_only(model, "lip")
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(".lora_" in n and ".lip." in n for n in names) and len(trainable) == len(names)
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".texture." in n or ".lora_" not in n)
    train_only(model, "base")
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".lora_" in n)


# -- what the losses see ---------------------------------------------------------------------------

def test_flow_loss_scores_generated_frames_only():
    b, frames = 2, 3
    noised = torch.tensor([[False, True, True], [True, True, True]])[:, None, :, None, None]
    v = torch.randn(b, 4, frames, 2, 2)
    latents = PairLatents(target=v, reference=v, audio_features=None, face_weight=torch.zeros(b, 1, frames, 2, 2),
                          lip_weight=torch.zeros(b, 1, frames, 2, 2))

    def loss(v_hat):
        step = FlowStep(t=torch.rand(b), x_t=v, v=v, v_hat=v_hat, noised=noised, audio_keep=torch.ones(b))
        return float(weighted_flow_loss(step, latents))

    v_hat = v + 0.1
    base = loss(v_hat)
    motion_changed = v_hat.clone()
    motion_changed[0, :, 0] += 5  # sample 0's motion frame: clean context, not scored
    assert loss(motion_changed) == pytest.approx(base)
    generated_changed = v_hat.clone()
    generated_changed[1, :, 0] += 5  # sample 1 has no motion frames: its frame 0 is generated
    assert loss(generated_changed) > base + 1


def test_texture_losses_see_only_the_silent_branch():
    per_sample = torch.tensor([0.3, 0.7, 0.1, 0.9], requires_grad=True)
    keep = torch.tensor([1.0, 0.0, 1.0, 0.0])  # audio given to samples 0 and 2
    loss = silent_mean(per_sample, keep)
    assert float(loss.detach()) == pytest.approx(0.8)
    loss.backward()
    assert torch.equal(per_sample.grad, torch.tensor([0.0, 0.5, 0.0, 0.5]))
    assert float(silent_mean(per_sample, torch.ones(4)).detach()) == 0.0  # nothing silent: no texture loss


def test_edit_long_dubs_a_clip_longer_than_a_segment():
    from factory.models.vae import VAE, VAEConfig
    from factory.models.xdub_stage2 import edit_long

    torch.manual_seed(0)
    vae = VAE(VAEConfig(kind="wan", tiny={}, device="cpu"))
    model = XDubEditor(**{**TINY_DIT, "latent_channels": vae.latent_channels, "num_reference_frames": 3,
                          "motion_latent_frames": 2}).eval()  # 9-frame segments, 5 of them bridging the next
    video, audio = torch.rand(1, 3, 15, 32, 32) * 2 - 1, torch.randn(1, 15, 2, 8)

    def run(seed):
        return edit_long(model, vae, video, audio, segment_frames=9, steps=2, generator=torch.Generator().manual_seed(seed))

    out = run(0)
    assert out.shape == video.shape and torch.isfinite(out).all() and out.abs().max() <= 1
    assert torch.equal(out, run(0)) and not torch.equal(out, run(1))
    with pytest.raises(ValueError, match="9-frame segments"):
        edit_long(model, vae, video, audio, segment_frames=13, steps=2)
