"""The FlashLips Stage 1 latent editor, its lip-pose encoder and losses, on tiny models at 64 px:
shapes, the residual formulation, save/load, the perceptual term (skipped without weights, computed
from local ones), the mouth term's size threshold, joint training of the lip-pose CNN, a short
overfitting run, and `edit_frames`."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from diffusers import AutoencoderKL

from factory.config import ConfigError
from factory.models.editor_losses import EditorLoss, EditorLossConfig, VGGPerceptual, mouth_pixel_l1
from factory.models.latent_editor import LatentEditor, decode_latents, edit_frames, encode_frames, frozen
from factory.models.lip_pose import LipPoseEncoder

SIZE, K = 64, 20
TINY_EDITOR = dict(latent_channels=4, lip_dim=12, ref_channels=4, block_out_channels=(16, 32), layers_per_block=1,
                   norm_num_groups=4, lip_embed_dim=16)
TINY_LIPS = dict(num_landmarks=K, hidden_dim=32, crop_size=16, cnn_channels=(8, 16), norm_num_groups=4)


def tiny_vae() -> AutoencoderKL:
    """Three blocks: 64 px frames -> 16 x 16 x 4 latents."""
    torch.manual_seed(0)
    return frozen(AutoencoderKL(block_out_channels=[8, 16, 16], down_block_types=["DownEncoderBlock2D"] * 3,
                                up_block_types=["UpDecoderBlock2D"] * 3, latent_channels=4, norm_num_groups=4,
                                layers_per_block=1, sample_size=SIZE))


def tiny_models(seed: int = 0) -> tuple[LatentEditor, LipPoseEncoder]:
    torch.manual_seed(seed)
    return LatentEditor(**TINY_EDITOR), LipPoseEncoder(**TINY_LIPS)


def synthetic_batch(b: int = 2, t: int = 3, n: int = 2, openings=None, seed: int = 0) -> dict:
    """The clip dataset's batch dict, drawn: a skin-coloured face on a coloured background, a dark
    mouth ellipse whose opening changes per frame, its outline as the K mouth landmarks."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
    openings = torch.as_tensor(openings if openings is not None else torch.rand(b, t, generator=g) * 8 + 1.5)
    frames, lips, landmarks = [], [], []
    for i in range(b):
        background = torch.rand(3, 1, 1, generator=g) * 2 - 1
        skin = torch.tensor([0.6, 0.2, 0.0])[:, None, None] + 0.2 * torch.rand(3, 1, 1, generator=g)
        face = (((xx - 32) / 22) ** 2 + ((yy - 30) / 28) ** 2 <= 1).float()
        video, vlips, vmarks = [], [], []
        for j in range(t):
            half_h = float(openings[i, j])
            mouth = (((xx - 32) / 10) ** 2 + ((yy - 44) / half_h) ** 2 <= 1).float()
            frame = background * (1 - face) + skin * face
            frame = frame * (1 - mouth) + torch.tensor([-0.6, -0.9, -0.9])[:, None, None] * mouth
            video.append(frame)
            vlips.append(mouth[None])
            angle = torch.arange(K) * 2 * math.pi / K
            vmarks.append(torch.stack([32 + 10 * torch.cos(angle), 44 + half_h * torch.sin(angle)], -1) / SIZE)
        frames.append(torch.stack(video, 1))
        lips.append(torch.stack(vlips, 1))
        landmarks.append(torch.stack(vmarks))
    target = torch.stack(frames)
    face_mask = torch.zeros(b, 1, t, SIZE, SIZE)
    face_mask[..., 32:60, 12:52] = 1
    references = target[:, :, :1].repeat(1, 1, n, 1, 1).flip(2)  # stand-ins: other frames of the video
    return {"target": target, "references": references, "face_mask": face_mask, "lip_mask": torch.stack(lips),
            "mouth_landmarks": torch.stack(landmarks), "key": [f"clip{i}/0" for i in range(b)]}


@pytest.fixture
def one_thread():
    """One torch thread: on a busy 2-core box two threads per step are several times slower, not faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomise_output(editor: LatentEditor, seed: int = 1) -> None:
    """Give the zero-initialised output conv weights, so the residual is not trivially 0."""
    torch.manual_seed(seed)
    torch.nn.init.normal_(editor.conv_out.weight, std=0.05)


# -- models -------------------------------------------------------------------------------------

def test_shapes_and_the_residual_is_zero_at_init():
    vae = tiny_vae()
    editor, lip_encoder = tiny_models()
    batch = synthetic_batch(b=2, t=3, n=2)
    frames = batch["target"].transpose(1, 2).flatten(0, 1)
    lips = lip_encoder(batch["mouth_landmarks"].flatten(0, 1), frames)
    assert lips.shape == (6, 12) and lip_encoder.pose_dim == 12
    crops = lip_encoder.mouth_crop(batch["mouth_landmarks"].flatten(0, 1), frames)
    assert crops.shape == (6, 3, 16, 16)
    mouth_colour = torch.tensor([-0.6, -0.9, -0.9])  # the crop is centred on the drawn mouth
    torch.testing.assert_close(crops[:, :, 7:9, 7:9].mean((2, 3)), mouth_colour.expand(6, 3), atol=0.05, rtol=0)

    z_masked = encode_frames(vae, frames * (1 - batch["face_mask"].transpose(1, 2).flatten(0, 1)))
    z_ref = encode_frames(vae, batch["references"].transpose(1, 2).flatten(0, 1)).unflatten(0, (2, 2))
    assert z_masked.shape == (6, 4, 16, 16) and z_ref.shape == (2, 2, 4, 16, 16)
    z_hat = editor(z_masked, z_ref, lips, frames_per_reference_set=3)
    assert z_hat.shape == z_masked.shape
    assert torch.equal(z_hat, z_masked)  # zero-initialised output conv: the residual starts at 0
    randomise_output(editor)
    residual = editor.predict_residual(z_masked, z_ref, lips, frames_per_reference_set=3)
    assert residual.abs().amax() > 0
    torch.testing.assert_close(editor(z_masked, z_ref, lips, 3), z_masked + residual)
    assert decode_latents(vae, z_hat).shape == frames.shape


def test_concat_fusion_needs_its_number_of_references():
    torch.manual_seed(0)
    editor = LatentEditor(**{**TINY_EDITOR, "ref_fusion": "concat", "num_references": 2})
    z, lips = torch.randn(3, 4, 16, 16), torch.randn(3, 12)
    assert editor(z, torch.randn(1, 2, 4, 16, 16), lips, 3).shape == z.shape
    with pytest.raises(ValueError, match="needs 2 references"):
        editor(z, torch.randn(1, 3, 4, 16, 16), lips, 3)


def test_save_pretrained_round_trip_gives_identical_outputs(tmp_path):
    editor, lip_encoder = tiny_models()
    randomise_output(editor)
    editor.eval(), lip_encoder.eval()
    batch = synthetic_batch(b=1, t=2, n=2)
    frames = batch["target"].transpose(1, 2).flatten(0, 1)
    landmarks = batch["mouth_landmarks"].flatten(0, 1)
    z, z_ref = torch.randn(2, 4, 16, 16), torch.randn(1, 2, 4, 16, 16)
    lips = lip_encoder(landmarks, frames)
    before = editor(z, z_ref, lips, 2)

    editor.save_pretrained(tmp_path / "editor")
    lip_encoder.save_pretrained(tmp_path / "lips")
    editor2 = LatentEditor.from_pretrained(tmp_path / "editor").eval()
    lip_encoder2 = LipPoseEncoder.from_pretrained(tmp_path / "lips").eval()
    assert list(editor2.config.block_out_channels) == [16, 32] and editor2.config.ref_fusion == "mean"
    lips2 = lip_encoder2(landmarks, frames)
    assert torch.equal(lips2, lips)
    assert torch.equal(editor2(z, z_ref, lips2, 2), before)


# -- losses -------------------------------------------------------------------------------------

def test_perceptual_term_is_skipped_with_a_note_when_no_weights_are_given(caplog):
    vae = tiny_vae()
    editor, lip_encoder = tiny_models()
    with caplog.at_level(logging.WARNING, logger="factory.models.editor_losses"):
        loss = EditorLoss(EditorLossConfig(), key_prefix="loss.")
    assert len(loss.notes) == 1 and "loss.vgg_path" in loss.notes[0]
    assert sum("perceptual loss skipped" in r.message for r in caplog.records) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="factory.models.editor_losses"):
        total, parts = loss(synthetic_batch(), vae, editor, lip_encoder)
        loss(synthetic_batch(), vae, editor, lip_encoder)
    assert not caplog.records  # said once, not every step
    assert set(parts) == {"latent_l1", "masked_latent_l1", "lower_face_l1", "mouth_l1"}
    assert torch.isfinite(total) and total > 0
    expected = 0.1 * parts["latent_l1"] + 0.1 * parts["masked_latent_l1"] + 10 * parts["lower_face_l1"] \
        + 100 * parts["mouth_l1"]
    torch.testing.assert_close(total.detach(), expected)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_perceptual_term_is_computed_from_local_vgg_weights(tmp_path, suffix):
    from safetensors.torch import save_file
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    features = make_layers(cfgs["D"])[:16]  # a vgg16's first three blocks, random: enough for taps 3, 8, 15
    state = {f"features.{k}": v.contiguous() for k, v in features.state_dict().items()}
    path = tmp_path / f"vgg16{suffix}"
    torch.save(state, path) if suffix == ".pth" else save_file(state, str(path))

    cfg = EditorLossConfig(vgg_path=str(path), vgg_arch="vgg16", vgg_layers=[3, 8, 15])
    loss = EditorLoss(cfg)
    assert not loss.notes
    vae = tiny_vae()
    editor, lip_encoder = tiny_models()
    randomise_output(editor)
    total, parts = loss(synthetic_batch(), vae, editor, lip_encoder)
    assert parts["perceptual"] > 0 and torch.isfinite(parts["perceptual"])
    rest = sum(getattr(cfg, k) * v for k, v in parts.items() if k != "perceptual")
    torch.testing.assert_close(total.detach(), rest + 50 * parts["perceptual"])
    x = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    assert VGGPerceptual(path, "vgg16", [3, 8, 15])(x, x) == 0


def test_missing_or_wrong_vgg_weights_name_the_config_key(tmp_path):
    with pytest.raises(ConfigError, match="'loss.vgg_path'"):
        EditorLoss(EditorLossConfig(vgg_path=str(tmp_path / "none.pth")), key_prefix="loss.")
    torch.save({"something.else": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="'vgg_path'.*not a vgg19 state dict"):
        EditorLoss(EditorLossConfig(vgg_path=str(tmp_path / "other.pth")))


def test_mouth_term_ignores_frames_whose_mouth_is_below_the_threshold():
    batch = synthetic_batch(b=1, t=2, openings=[[6.0, 0.6]])  # frame 0 open, frame 1 nearly closed
    x = batch["target"][0].transpose(0, 1)
    lip = batch["lip_mask"][0].transpose(0, 1)
    areas = lip.flatten(1).mean(1)
    threshold = 0.01
    assert areas[0] > threshold > areas[1] > 0
    pred = x + 0.1 * torch.randn_like(x)
    value, used = mouth_pixel_l1(pred, x, lip, threshold)
    assert used.tolist() == [True, False] and value > 0
    wild = pred.clone()
    wild[1] += 5.0  # a big error in the small-mouth frame changes nothing
    assert torch.equal(mouth_pixel_l1(wild, x, lip, threshold)[0], value)
    nothing, used = mouth_pixel_l1(pred, x, lip, 1.0)  # no frame qualifies: exactly zero
    assert not used.any() and nothing == 0

    vae = tiny_vae()
    editor, lip_encoder = tiny_models()
    randomise_output(editor)
    _, parts = EditorLoss(EditorLossConfig(perceptual=0.0, mouth_min_area=1.0))(batch, vae, editor, lip_encoder)
    assert parts["mouth_l1"] == 0 and parts["lower_face_l1"] > 0


def test_gradients_reach_the_lip_pose_cnn_and_never_the_vae():
    vae = tiny_vae()
    editor, lip_encoder = tiny_models()
    loss = EditorLoss(EditorLossConfig(perceptual=0.0))
    optimizer = torch.optim.Adam([*editor.parameters(), *lip_encoder.parameters()], lr=1e-3)
    batch = synthetic_batch()
    for _ in range(2):  # the first step moves the zero output conv off zero; the second reaches everything
        optimizer.zero_grad()
        total, _ = loss(batch, vae, editor, lip_encoder)
        total.backward()
        optimizer.step()
    first_conv = lip_encoder.cnn[0]
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0
    assert lip_encoder.expression[0].weight.grad.abs().sum() > 0
    assert editor.f_ref[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in vae.parameters())


@pytest.mark.slow  # ~25 s on 2 cores
def test_a_short_seeded_run_overfits_a_few_frames(one_thread):
    """100 Adam steps on one fixed batch of 6 frames lower the total loss by a third and more. The floor
    here is the *random* tiny VAE's decoder (it cannot draw the targets' colours whatever the latent),
    not the editor: this is not the learning-signal test, which runs on the demo corpus."""
    vae = tiny_vae()
    editor, lip_encoder = tiny_models(seed=0)
    loss = EditorLoss(EditorLossConfig(perceptual=0.0))
    optimizer = torch.optim.Adam([*editor.parameters(), *lip_encoder.parameters()], lr=2e-3)
    batch = synthetic_batch(b=2, t=3, n=2, seed=1)
    history, mouth = [], []
    for _ in range(100):
        optimizer.zero_grad()
        total, parts = loss(batch, vae, editor, lip_encoder)
        total.backward()
        optimizer.step()
        history.append(total.item())
        mouth.append(parts["mouth_l1"].item())
    assert history[-1] < 0.7 * history[0], [round(h, 2) for h in history[::10]]
    assert mouth[-1] < 0.75 * mouth[0]


# -- inference ----------------------------------------------------------------------------------

def test_edit_frames_follows_the_target_lip_poses():
    vae = tiny_vae()
    editor, lip_encoder = tiny_models()
    randomise_output(editor)
    editor.eval(), lip_encoder.eval()
    real = synthetic_batch(b=1, t=5, seed=0)
    alt = synthetic_batch(b=1, t=5, seed=0, openings=[[1.0, 9.0, 1.0, 9.0, 1.0]])
    frames = real["target"][0].transpose(0, 1)
    masks = real["face_mask"][0].transpose(0, 1)
    refs = real["references"][0].transpose(0, 1)
    alt_frames, alt_marks = alt["target"][0].transpose(0, 1), alt["mouth_landmarks"][0]

    out = edit_frames(editor, lip_encoder, vae, frames, masks, refs, alt_frames, alt_marks, batch_size=2)
    assert out.shape == frames.shape and out.dtype == torch.float32 and out.abs().max() <= 1
    # batched or not, the same frames (up to the convolutions' float rounding at another batch size)
    torch.testing.assert_close(out, edit_frames(editor, lip_encoder, vae, frames, masks, refs, alt_frames, alt_marks))
    # the same real frames pushed toward the real clip's own poses come out differently
    own = edit_frames(editor, lip_encoder, vae, frames, masks, refs, frames, real["mouth_landmarks"][0])
    assert (own - out).abs().amax() > 1e-4
    # with a zero residual the edit is just the masked frame through the VAE, whatever the target
    torch.nn.init.zeros_(editor.conv_out.weight)
    plain = edit_frames(editor, lip_encoder, vae, frames, masks, refs, alt_frames, alt_marks)
    masked = decode_latents(vae, encode_frames(vae, frames * (1 - masks))).clamp(-1, 1)
    torch.testing.assert_close(plain, masked)
    with pytest.raises(ValueError, match="same length"):
        edit_frames(editor, lip_encoder, vae, frames, masks, refs, alt_frames[:3], alt_marks[:3])
