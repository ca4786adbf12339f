"""The `flashlips-refine` building blocks on tiny random models: the flow-matching path in lip-pose
space (interpolation, target, Euler sampler), the lip-pose flow transformer, wav2vec 2.0 features
per video frame, and the mask-free pair editor's both-direction batching and loss."""

from __future__ import annotations

import pytest
import torch

from factory.config import ConfigError
from factory.models.lip_pose_flow import (LipPoseFlow, euler_sample, lip_flow_loss, noised_poses,
                                          velocity_target)
from factory.models.wav2vec_features import Wav2VecFeatureConfig, Wav2VecFeatures

TINY_FLOW = dict(pose_dim=12, audio_dim=8, audio_window=4, hidden_dim=32, num_layers=2, num_heads=2, ffn_mult=2,
                 max_frames=16)


# -- the path in lip-pose space ---------------------------------------------------------------------

def test_the_path_runs_from_noise_at_t0_to_the_poses_at_t1_and_its_velocity_is_the_target():
    g = torch.Generator().manual_seed(0)
    z, noise = torch.randn(3, 5, 12, generator=g), torch.randn(3, 5, 12, generator=g)
    assert torch.equal(noised_poses(z, noise, torch.zeros(3)), noise)
    assert torch.equal(noised_poses(z, noise, torch.ones(3)), z)
    t = torch.tensor([0.25, 0.5, 0.9])
    assert torch.allclose(noised_poses(z, noise, t), (1 - t)[:, None, None] * noise + t[:, None, None] * z)
    assert torch.equal(velocity_target(z, noise), z - noise)
    h = 1e-2  # the path's derivative in t is the target, everywhere along it
    slope = (noised_poses(z, noise, t + h) - noised_poses(z, noise, t)) / h
    assert torch.allclose(slope, velocity_target(z, noise), atol=1e-4)


@pytest.mark.parametrize("steps", [1, 3, 10])
def test_euler_integrates_the_ideal_field_of_one_pose_sequence_exactly(steps):
    """v(z, t) = (x1 - z) / (1 - t) is the flow-matching field of a single data point: it is constant
    along the straight path, so any number of Euler steps lands on x1."""
    g = torch.Generator().manual_seed(1)
    x1, noise = torch.randn(2, 7, 12, generator=g), torch.randn(2, 7, 12, generator=g)
    out = euler_sample(lambda z, t: (x1 - z) / (1 - t)[:, None, None], noise, steps)
    assert torch.allclose(out, x1, atol=1e-5)
    c = torch.randn(2, 7, 12, generator=g)
    assert torch.allclose(euler_sample(lambda z, t: c, noise, steps), noise + c, atol=1e-6)


def test_euler_steps_sit_at_t_equals_i_over_n():
    """dz/dt = 2t: Euler with n steps from t = 0 sums 2 (i / n) / n = (n - 1) / n, not the exact 1."""
    noise = torch.zeros(1, 1, 1)
    for n in (1, 2, 5):
        out = euler_sample(lambda z, t: 2 * t[:, None, None].expand_as(z), noise, n)
        assert out.item() == pytest.approx((n - 1) / n, abs=1e-6)
    with pytest.raises(ValueError):
        euler_sample(lambda z, t: z, noise, 0)


# -- the flow transformer ---------------------------------------------------------------------------

def flow_inputs(b=2, t=5, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, t, 12, generator=g), torch.rand(b, generator=g), torch.randn(b, t, 4, 8, generator=g),
            torch.randn(b, k, 12, generator=g))


def test_an_untrained_flow_carries_noise_to_poses_of_the_training_mean_and_spread():
    """Its head starts at zero, so it predicts the Gaussian skip alone: the ideal field of N(0, I)
    poses, whose flow z(t) = z0 sqrt((1 - t)^2 + t^2) returns the noise at t = 1 (denormalised) and
    whose t = 0 estimate eps + v is the mean pose."""
    from factory.models.lip_pose_flow import gaussian_velocity

    torch.manual_seed(0)
    flow = LipPoseFlow(**TINY_FLOW).eval()
    flow.pose_mean.fill_(0.5)
    flow.pose_std.fill_(2.0)
    z, t, audio, refs = flow_inputs()
    assert torch.allclose(flow(z, t, audio, refs), gaussian_velocity(z, t))
    noise = torch.randn(2, 5, 12)
    assert torch.allclose(noise + flow(noise, torch.zeros(2), audio, refs), torch.zeros_like(noise), atol=1e-6)
    # Euler's error shrinks as 1 / steps (about 0.01 of the normalised pose at 400 steps)
    assert torch.allclose(flow.sample(audio, refs, steps=400, noise=noise), noise * 2.0 + 0.5, atol=0.05)
    plain = LipPoseFlow(**TINY_FLOW, gaussian_skip=False).eval()
    assert torch.equal(plain(z, t, audio, refs), torch.zeros_like(z))


def test_the_flow_reads_its_audio_and_its_references_and_checks_shapes():
    torch.manual_seed(0)
    flow = LipPoseFlow(**TINY_FLOW).eval()
    torch.nn.init.normal_(flow.head.weight, std=0.1)
    z, t, audio, refs = flow_inputs()
    v = flow(z, t, audio, refs)
    assert v.shape == z.shape
    assert not torch.allclose(v, flow(z, t, audio.flip(1), refs))
    assert not torch.allclose(v, flow(z, t, audio, refs * 2))
    assert flow(z, t, audio, refs[:, :1]).shape == z.shape  # any K
    with pytest.raises(ValueError, match="audio must be"):
        flow(z, t, audio[:, :, :2], refs)
    with pytest.raises(ValueError, match="max_frames"):
        flow(torch.zeros(1, 17, 12), t[:1], torch.zeros(1, 17, 4, 8), refs[:1])


def test_the_flow_loss_trains_the_model_and_the_pose_normalisation_is_saved(tmp_path):
    torch.manual_seed(0)
    flow = LipPoseFlow(**TINY_FLOW)
    flow.pose_mean.copy_(torch.linspace(-1, 1, 12))
    flow.pose_std.fill_(3.0)
    z, _, audio, refs = flow_inputs(b=4, seed=3)
    poses = flow.denormalise(z)
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        first = float(lip_flow_loss(flow, poses, audio, refs, generator=torch.Generator().manual_seed(9)))
    for _ in range(60):
        opt.zero_grad()
        lip_flow_loss(flow, poses, audio, refs, generator=g).backward()
        opt.step()
    with torch.no_grad():
        last = float(lip_flow_loss(flow, poses, audio, refs, generator=torch.Generator().manual_seed(9)))
    assert last < 0.7 * first, (first, last)
    flow.save_pretrained(tmp_path / "flow")
    again = LipPoseFlow.from_pretrained(tmp_path / "flow")
    assert torch.equal(again.pose_std, flow.pose_std) and torch.equal(again.pose_mean, flow.pose_mean)
    noise = torch.randn(4, 5, 12)
    assert torch.equal(again.eval().sample(audio, refs, 3, noise=noise), flow.eval().sample(audio, refs, 3, noise=noise))


# -- wav2vec 2.0 features ---------------------------------------------------------------------------

def test_tiny_wav2vec_gives_one_window_per_video_frame_reproducibly():
    cfg = Wav2VecFeatureConfig(tiny={}, window=4, device="cpu", seed=3)
    enc = Wav2VecFeatures(cfg)
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(2, 25 * 640, generator=g) * 0.1
    states = enc.encoder_states(audio)
    assert states.shape == (2, 50, enc.dim)  # 50 Hz: two steps per video frame
    feats = enc(audio)
    assert feats.shape == (2, 25, 4, enc.dim)
    # frame i's window holds steps 2i - 1 .. 2i + 2 (clamped at the edges)
    assert torch.equal(feats[:, 10], states[:, 19:23])
    assert torch.equal(feats[:, 0, 0], states[:, 0])
    assert torch.equal(Wav2VecFeatures(cfg)(audio), feats)  # the same seed, the same random encoder
    assert enc.features_np(audio[0].numpy()).shape == (25, 4, enc.dim)
    last = Wav2VecFeatures(Wav2VecFeatureConfig(tiny={}, window=4, device="cpu", seed=3, layer=0))(audio)
    assert not torch.allclose(last, feats)


def test_wav2vec_without_weights_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="'wav2vec.path' is not set"):
        Wav2VecFeatures(Wav2VecFeatureConfig(device="cpu"))
    with pytest.raises(ConfigError, match="'w.path'.*not a local wav2vec"):
        Wav2VecFeatures(Wav2VecFeatureConfig(path=str(tmp_path), device="cpu"), key="w")
    with pytest.raises(ConfigError, match="'wav2vec.layer'"):
        Wav2VecFeatures(Wav2VecFeatureConfig(tiny={}, layer=7, device="cpu"))


def test_wav2vec_loads_a_local_folder(tmp_path):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from factory.models.wav2vec_features import TINY_WAV2VEC

    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(**TINY_WAV2VEC)).save_pretrained(tmp_path / "w2v")
    enc = Wav2VecFeatures(Wav2VecFeatureConfig(path=str(tmp_path / "w2v"), window=2, device="cpu"))
    assert enc(torch.zeros(1, 5 * 640)).shape == (1, 5, 2, TINY_WAV2VEC["hidden_size"])


# -- the mask-free pair editor ----------------------------------------------------------------------

def pair_batch(b=2, t=3, s=32, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    real = torch.rand(b, 3, t, s, s, generator=g) * 2 - 1
    syn = real.clone()
    syn[:, :, :, 18:26, 10:22] = torch.rand(b, 3, t, 8, 12, generator=g) * 2 - 1  # the lips differ
    face = torch.zeros(b, 1, t, s, s)
    face[..., 14:30, 6:26] = 1
    alpha = torch.zeros(b, 1, t, s, s)
    alpha[..., 18:26, 10:22] = 1
    alpha[..., 29:31, 10:22] = 0.5  # the generator reached a little below the face mask
    lip, syn_lip = torch.zeros(b, 1, t, s, s), torch.zeros(b, 1, t, s, s)
    lip[..., 19:23, 12:20] = 1
    syn_lip[..., 20:26, 12:20] = 1
    lms = torch.rand(b, t, 40, 2, generator=g) * 0.2 + 0.4
    return {"target": real, "synthetic": syn, "references": torch.rand(b, 3, 2, s, s, generator=g) * 2 - 1,
            "face_mask": face, "lip_mask": lip, "syn_lip_mask": syn_lip, "alpha": alpha,
            "mouth_landmarks": lms, "syn_mouth_landmarks": lms + 0.01, "key": [f"k{i}" for i in range(b)]}


def test_both_directions_stack_real_to_synthetic_then_synthetic_to_real():
    from factory.models.pair_editor_loss import both_directions

    batch = pair_batch()
    ex = both_directions(batch)
    b = 2
    assert torch.equal(ex["input"][:b], batch["target"]) and torch.equal(ex["output"][:b], batch["synthetic"])
    assert torch.equal(ex["input"][b:], batch["synthetic"]) and torch.equal(ex["output"][b:], batch["target"])
    # the lips are read from the side the editor must produce
    assert torch.equal(ex["driver_landmarks"][:b], batch["syn_mouth_landmarks"])
    assert torch.equal(ex["driver_landmarks"][b:], batch["mouth_landmarks"])
    assert torch.equal(ex["references"][:b], ex["references"][b:])
    # regions: the face mask joined with where the pair differs; both sides' lips joined
    face, mouth = ex["face"], ex["mouth"]
    assert face[..., 29, 12].eq(1).all() and face[..., 14, 6].eq(1).all() and face[..., 0, 0].eq(0).all()
    assert mouth[..., 19, 12].eq(1).all() and mouth[..., 25, 12].eq(1).all() and mouth[..., 27, 12].eq(0).all()
    assert torch.equal(face[:b], face[b:]) and torch.equal(mouth[:b], mouth[b:])


def tiny_editor_parts(seed=0):
    from factory.generators.latent_editor import LatentEditorGenerator

    g = LatentEditorGenerator.tiny(seed=seed)  # its output conv is non-zero: the lip pose matters
    return g.editor, g.lip_pose, g.vae.requires_grad_(False)


def test_the_pair_loss_is_mask_free_and_trains_editor_and_lip_pose():
    from factory.models.editor_losses import EditorLossConfig
    from factory.models.pair_editor_loss import PairEditorLoss

    torch.manual_seed(0)
    editor, lip_pose, vae = tiny_editor_parts()
    loss = PairEditorLoss(EditorLossConfig(mouth_min_area=0.001))
    batch = pair_batch()
    total, parts = loss(batch, vae, editor, lip_pose)
    assert set(parts) == {"latent_l1", "masked_latent_l1", "lower_face_l1", "mouth_l1"}
    assert loss.notes and "perceptual" in loss.notes[0]
    assert all(torch.isfinite(v) and v > 0 for v in parts.values())
    total.backward()
    assert editor.conv_out.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lip_pose.parameters())

    # mask-free: with identical sides an editor whose residual is 0 returns E(input) = E(output)
    # exactly, so the latent terms vanish (a masked input would leave them far from 0)
    torch.nn.init.zeros_(editor.conv_out.weight)
    torch.nn.init.zeros_(editor.conv_out.bias)
    same = dict(batch, synthetic=batch["target"], syn_mouth_landmarks=batch["mouth_landmarks"])
    _, parts = loss(same, vae, editor, lip_pose)
    assert parts["latent_l1"] == 0 and parts["masked_latent_l1"] == 0
