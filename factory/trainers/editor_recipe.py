"""`factory train-generator` recipe for the latent editor (FlashLips Stage 1): self-supervised
reconstruction on the factory's own clip stores.

Every frame of a clip-store segment is one example: its lower face is masked out, the editor
redraws it from reference frames of the same video and the lip pose read from the real frame
(factory/models/editor_losses.py `EditorLoss`), and the loss compares the result with the real frame.
At generation time the pose comes from the alternative clip instead.

Read top to bottom: 1. settings, 2. the trained module, 3. the recipe (model, batches, loss,
held-out evaluation, export as a generator folder).

Held-out evaluation (by video) reports the mouth-region L1 and PSNR of the edit composited into
the real frame, beside the two obvious baselines it must beat: the masked input itself
(`masked`) and a reference frame's lower face pasted in (`reference`); `vae` is the VAE's own
reconstruction (the ceiling of any editor in its latent space). `swap_*` edits each frame with
another held-out frame's lip pose: `swap_vs_real` above `edit` means the lips follow the pose.

The VAE is frozen, except that `vae_trainable` trains its decoder with the editor: for the tiny
random CPU VAE only (a random decoder cannot draw the faces); a real VAE (SDXL's) stays frozen.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from factory.config import ConfigError
from factory.models.editor_losses import EditorLoss, EditorLossConfig, frames_of
from factory.models.vae import VAEConfig
from factory.trainers.clip_data import ClipDataConfig, ClipDataset, data_loader
from factory.trainers.loop import LoopConfig, Recipe, unwrap

TINY_EDITOR = {"ref_channels": 4, "block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 4,
               "lip_embed_dim": 16}
TINY_LIP_POSE = {"num_landmarks": 40, "hidden_dim": 32, "crop_size": 16, "cnn_channels": [8, 16], "norm_num_groups": 4}
TINY_VAE_OVERRIDES = {"block_out_channels": [16, 32], "down_block_types": ["DownEncoderBlock2D"] * 2,
                      "up_block_types": ["UpDecoderBlock2D"] * 2, "layers_per_block": 1,
                      "mid_block_add_attention": False}


# 1. settings ------------------------------------------------------------------------------------

@dataclass
class LatentEditorConfig:
    generator: str = "latent_editor"
    clip_stores: list[str] = field(default_factory=list)  # folders written by `factory ingest` (else data.clip_stores)
    # per frame: short segments (4k + 1) are enough; references come from other segments of the video
    data: ClipDataConfig = field(default_factory=lambda: ClipDataConfig(
        resolution=64, segment_frames=5, motion_frames=0, reference_frames=2, heldout_share=0.34))
    # the image VAE (kind "kl": AutoencoderKL); a local folder (SDXL's VAE) on a GPU, a tiny random one on CPU
    vae: VAEConfig = field(default_factory=lambda: VAEConfig(kind="kl", tiny=dict(TINY_VAE_OVERRIDES)))
    vae_trainable: bool = False  # train the VAE's decoder with the editor (a tiny CPU VAE only)
    # LatentEditor / LipPoseEncoder kwargs; null: the tiny CPU ones below (latent_channels, lip_dim and
    # num_references are filled in from the VAE, the lip-pose encoder and data.reference_frames)
    editor: Any = None
    lip_pose: Any = None
    losses: EditorLossConfig = field(default_factory=EditorLossConfig)  # no vgg_path: perceptual skipped, with a note
    eval_segments: int = 16  # held-out segments per evaluation
    generate_batch_size: int = 16  # the exported generator's frames per pass
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(out="runs/latent_editor", batch_size=4, lr=1e-3,
                                                                  eval_every=100, checkpoint_every=100))


def data_config(cfg: LatentEditorConfig) -> ClipDataConfig:
    return dataclasses.replace(cfg.data, clip_stores=list(cfg.clip_stores or cfg.data.clip_stores))


def editor_kwargs(cfg: LatentEditorConfig) -> dict[str, Any]:
    return dict(TINY_EDITOR if cfg.editor is None else cfg.editor)


def lip_pose_kwargs(cfg: LatentEditorConfig) -> dict[str, Any]:
    return dict(TINY_LIP_POSE if cfg.lip_pose is None else cfg.lip_pose)


def check_config(cfg: LatentEditorConfig) -> None:
    from factory.faces.landmarks import MOUTH

    k = lip_pose_kwargs(cfg).get("num_landmarks", 40)
    if k != len(MOUTH):
        raise ConfigError(f"config key 'lip_pose.num_landmarks' is {k}, but the clip dataset gives {len(MOUTH)} "
                          "mouth landmarks (Face Mesh's lips): set it to that")
    if cfg.vae.kind != "kl":
        raise ConfigError(f"config key 'vae.kind' must be 'kl' (an image AutoencoderKL) for the latent editor, "
                          f"not {cfg.vae.kind!r}")
    if cfg.data.reference_frames < 1:
        raise ConfigError("config key 'data.reference_frames' must be >= 1: the editor draws from references")
    from factory.models.latent_editor import LatentEditor
    from factory.models.lip_pose import LipPoseEncoder

    for key, cls, kwargs in (("editor", LatentEditor, editor_kwargs(cfg)),
                             ("lip_pose", LipPoseEncoder, lip_pose_kwargs(cfg))):
        if not isinstance(kwargs, dict):
            raise ConfigError(f"config key '{key}' must be a mapping of {cls.__name__} arguments (or null: tiny)")
        unknown = sorted(set(kwargs) - set(inspect.signature(cls.__init__).parameters))
        if unknown:
            raise ConfigError(f"unknown config key '{key}.{unknown[0]}' (not a {cls.__name__} argument)")
    editor = editor_kwargs(cfg)
    if editor.get("ref_fusion") == "concat" and editor.get("num_references", cfg.data.reference_frames) \
            != cfg.data.reference_frames:
        raise ConfigError("config key 'editor.num_references' must equal data.reference_frames "
                          "with ref_fusion 'concat'")


# 2. the trained module --------------------------------------------------------------------------

class EditorModule(nn.Module):
    """The editor and lip-pose encoder (trained) beside the image VAE (frozen, or its decoder
    trained when `vae_trainable`); `forward(batch)` is the training loss, so DDP syncs through it."""

    def __init__(self, editor: nn.Module, lip_pose: nn.Module, vae: nn.Module, loss: EditorLoss):
        super().__init__()
        self.editor, self.lip_pose, self.vae, self.loss = editor, lip_pose, vae, loss

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.loss(batch, self.vae, self.editor, self.lip_pose)


class EditorBatches:
    """The train split for one rank as an endless stream of collated batches, resumable by the
    dataset's stream position (the last sample drawn + 1)."""

    def __init__(self, dataset: ClipDataset):
        self.dataset, self.position = dataset, 0

    def __iter__(self) -> Iterator[dict]:
        self.dataset.start_at(self.position)
        for batch in data_loader(self.dataset):
            self.position = int(batch["position"][-1]) + 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "samples": self.dataset.fingerprint()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dataset.load_state_dict(state)
        self.position = self.dataset.position


# 3. the recipe ----------------------------------------------------------------------------------

class LatentEditorRecipe(Recipe):
    name = "latent_editor"
    Config = LatentEditorConfig
    free_keys = frozenset({"eval_segments", "generate_batch_size"})

    def __init__(self, config: LatentEditorConfig):
        check_config(config)
        super().__init__(config)

    def build_model(self, device: torch.device) -> EditorModule:
        from factory.models.latent_editor import LatentEditor
        from factory.models.lip_pose import LipPoseEncoder
        from factory.models.vae import load_vae_model

        cfg = self.config
        vae = load_vae_model(cfg.vae, key="vae").float().requires_grad_(False)
        if cfg.vae_trainable:
            vae.decoder.requires_grad_(True)
            if vae.post_quant_conv is not None:
                vae.post_quant_conv.requires_grad_(True)
        lip_pose = LipPoseEncoder(**lip_pose_kwargs(cfg))
        editor = LatentEditor(**{"num_references": cfg.data.reference_frames, **editor_kwargs(cfg),
                                 "latent_channels": vae.config.latent_channels, "lip_dim": lip_pose.pose_dim})
        factor = 2 ** (len(vae.config.block_out_channels) - 1) * editor.downsampling
        if cfg.data.resolution % factor:
            raise ConfigError(f"config key 'data.resolution' ({cfg.data.resolution}) must be a multiple of {factor} "
                              "(the VAE's and the editor's downsampling)")
        return EditorModule(editor, lip_pose, vae, EditorLoss(cfg.losses, key_prefix="losses."))

    def train_batches(self, batch_size: int, rank: int, world_size: int, seed: int) -> EditorBatches:
        # the order is seeded by data.seed (which also draws the held-out split), not loop.seed
        return EditorBatches(ClipDataset(data_config(self.config), "train", rank=rank, world_size=world_size,
                                         batch_size=batch_size, epochs=None))

    def loss(self, model: nn.Module, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        total, parts = model(batch)
        return total, {k: float(v) for k, v in parts.items()}

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        return evaluate_editor(unwrap(model), self.heldout(), self.config.eval_segments, device,
                               self.config.losses.scaling_factor)

    def heldout(self) -> ClipDataset:
        return ClipDataset(data_config(self.config), "heldout", batch_size=4, epochs=1)

    def generator(self, model: nn.Module):
        """The trained modules as a LatentEditorGenerator (on CPU copies, the training ones untouched)."""
        import copy

        from factory.generators.latent_editor import LatentEditorGenerator, LatentEditorSettings

        module, cfg = unwrap(model), self.config
        source = None
        if cfg.vae.path is not None and not cfg.vae_trainable:  # a frozen local VAE: record where it lives
            source = {"path": str(Path(cfg.vae.path).resolve()), "subfolder": cfg.vae.subfolder}
        settings = LatentEditorSettings(resolution=cfg.data.resolution, batch_size=cfg.generate_batch_size,
                                        reference_frames=cfg.data.reference_frames)
        parts = {name: copy.deepcopy(getattr(module, name)).cpu().float() for name in ("editor", "lip_pose", "vae")}
        return LatentEditorGenerator(settings, vae_source=source, **parts)

    def save_pretrained(self, model: nn.Module, path: Path) -> None:
        """A generator folder: `generate.generator=latent_editor generate.weights=<path>`."""
        self.generator(model).save_pretrained(path)


# 4. held-out evaluation -------------------------------------------------------------------------

@torch.no_grad()
def evaluate_editor(module: EditorModule, dataset: ClipDataset, segments: int, device: torch.device,
                    scaling_factor: float | None = None) -> dict[str, float]:
    """Mouth-region L1 (in [-1, 1] units) and PSNR (dB, on [0, 1]) over the first `segments`
    held-out segments: the edit (pose from the real frame) and the baselines, each composited into
    the real frame inside the face mask (what the generate stage does)."""
    from factory.models.latent_editor import decode_latents, encode_frames

    vae, editor, lip_pose = module.vae, module.editor, module.lip_pose
    sums: dict[str, float] = {}
    count = 0.0
    seen = 0
    for batch in data_loader(dataset):
        if seen >= segments:
            break
        b, _, t = batch["target"].shape[:3]
        x = frames_of(batch["target"]).to(device)
        face = frames_of(batch["face_mask"]).to(device)
        lip = frames_of(batch["lip_mask"]).to(device)
        refs = batch["references"].to(device)
        landmarks = batch["mouth_landmarks"].flatten(0, 1).to(device)
        z_masked = encode_frames(vae, x * (1 - face), scaling_factor)
        z_ref = encode_frames(vae, frames_of(refs), scaling_factor).unflatten(0, (b, refs.shape[2]))

        def edit(pose_landmarks, pose_frames):
            lips = lip_pose(pose_landmarks, pose_frames)
            z_hat = editor(z_masked, z_ref, lips, frames_per_reference_set=t)
            return decode_latents(vae, z_hat, scaling_factor).float().clamp(-1, 1)

        swap = torch.roll(torch.arange(len(x)), len(x) // 2)  # another segment's frame drives the pose
        renders = {
            "edit": edit(landmarks, x),
            "swap": edit(landmarks[swap], x[swap]),
            "masked": x * (1 - face),
            "reference": refs[:, :, 0].repeat_interleave(t, dim=0),
            "vae": decode_latents(vae, encode_frames(vae, x, scaling_factor), scaling_factor).float().clamp(-1, 1),
        }
        weight = lip.sum()
        if weight == 0:
            continue
        for name, render in renders.items():
            pasted = render * face + x * (1 - face)
            err = (pasted - x).abs() * lip
            sums[f"{name}_l1"] = sums.get(f"{name}_l1", 0.0) + float(err.sum() / 3)
            sums[f"{name}_se"] = sums.get(f"{name}_se", 0.0) + float(((pasted - x) ** 2 * lip).sum() / 3)
        driven = renders["swap"] * face + x * (1 - face)  # vs the frame whose pose drove it, in this mouth region
        sums["swap_vs_driver_l1"] = sums.get("swap_vs_driver_l1", 0.0) + float(
            ((driven - x[swap]).abs() * lip).sum() / 3)
        count += float(weight)
        seen += b
    if not count:
        return {}
    out = {}
    for name in ("edit", "swap", "masked", "reference", "vae"):
        key = "swap_vs_real" if name == "swap" else name
        out[f"mouth_l1_{key}"] = sums[f"{name}_l1"] / count
        mse01 = sums[f"{name}_se"] / count / 4  # [-1, 1] -> [0, 1]
        out[f"mouth_psnr_{key}"] = 10 * math.log10(1 / max(mse01, 1e-10))
    out["mouth_l1_swap_vs_driver"] = sums["swap_vs_driver_l1"] / count
    return out
