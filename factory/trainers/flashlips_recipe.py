"""`factory train-dubber` recipe `flashlips-refine`: FlashLips self-refinement on the factory's pairs.

Two stages, one recipe, chosen by `stage` (each its own run, `loop.out`):

- `editor`: the single-step latent editor (FlashLips Stage 1, factory/models/latent_editor.py),
  initialised from a `factory train-generator` latent_editor folder (`init_from`: its
  reconstruction weights, lip-pose encoder and VAE) or built fresh, fine-tuned mask-free on pairs
  in both directions (factory/models/pair_editor_loss.py). Its `final/` is again a latent_editor
  generator folder: the next self-refinement round's generator.
- `lip_flow`: Stage 2, audio -> lip poses (factory/models/lip_pose_flow.py): a transformer
  trained by conditional flow matching on the real side's lip poses, read by the refined editor's
  frozen lip-pose encoder (`init_from`: the editor stage's final folder, required), conditioned on
  wav2vec 2.0 windows of the real audio and K reference poses of the same speaker. The references
  are poses of K frames of the pair's *synthetic* side: the same person in the same shot saying
  other words, which is what the original video is when a user dubs it (the real segment's own
  frames would hand the model its answer). Its `final/` is a dubber folder
  (factory/trainers/flashlips_dubber.py: `FlashLipsDubber.from_pretrained`).

Batches come from factory/trainers/pair_data.py (`PairDataset`: the factory's manifests).

Read top to bottom: 1. settings, 2. the trained modules, 3. the recipe (registered for `factory
train-dubber` in factory/trainers/dubbers.py).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from factory.config import ConfigError
from factory.models.editor_losses import EditorLossConfig
from factory.models.vae import VAEConfig
from factory.models.wav2vec_features import Wav2VecFeatureConfig
from factory.trainers.dubber_metrics import METRICS, EvalIdentityConfig, EvalSyncNetConfig, check_metrics
from factory.trainers.editor_recipe import TINY_EDITOR, TINY_LIP_POSE, TINY_VAE_OVERRIDES, EditorModule
from factory.trainers.loop import LoopConfig, Recipe, unwrap
from factory.trainers.pair_data import PairDataConfig, PairDataset, pair_loader

STAGES = ("editor", "lip_flow")
TINY_FLOW = {"hidden_dim": 32, "num_layers": 2, "num_heads": 2, "ffn_mult": 2, "max_frames": 32}


# 1. settings ------------------------------------------------------------------------------------

@dataclass
class FlashLipsConfig:
    recipe: str = "flashlips-refine"
    stage: str = "editor"  # "editor" (mask-free self-refinement) | "lip_flow" (Stage 2: audio -> lip poses)
    manifests: list[str] = field(default_factory=list)  # pair manifests (else data.manifests)
    data: PairDataConfig = field(default_factory=lambda: PairDataConfig(
        manifests=[], resolution=64, segment_frames=5, motion_frames=0, reference_frames=2, heldout_share=0.34))
    # editor stage: a latent_editor generator folder to start from (Stage 1's reconstruction weights);
    # lip_flow stage: the editor stage's final folder (required), whose lip-pose encoder reads the targets
    init_from: str | None = None
    # editor stage without init_from: a fresh editor (kwargs as factory/trainers/editor_recipe.py; null: tiny)
    vae: VAEConfig = field(default_factory=lambda: VAEConfig(kind="kl", tiny=dict(TINY_VAE_OVERRIDES)))
    vae_trainable: bool = False  # train the VAE's decoder too (a tiny CPU VAE only)
    editor: Any = None
    lip_pose: Any = None
    train_lip_pose: bool = True  # editor stage: fine-tune the lip-pose encoder with the editor
    losses: EditorLossConfig = field(default_factory=EditorLossConfig)
    # lip_flow stage
    wav2vec: Wav2VecFeatureConfig = field(default_factory=Wav2VecFeatureConfig)  # path (or tiny in tests)
    flow: Any = None  # LipPoseFlow kwargs (pose_dim, audio_dim and audio_window are filled in); null: tiny
    reference_poses: int = 4  # K
    sample_steps: int = 10  # Euler steps when sampling poses (evaluation, the dubber)
    pose_stats_segments: int = 32  # training segments that set the pose normalisation
    # both
    eval_segments: int = 16  # held-out segments per evaluation
    # measurement metrics (factory/trainers/dubber_metrics.py) of the editor stage's mod -> src edit and of the
    # lip_flow stage's dubbed segments (synthetic video + real audio through the dubber it exports): any of
    # sync, csim, lmd, psnr ([]: the mouth-region numbers only); Sync needs `syncnet` (path or tiny), and
    # segments of at least its window + 2 frames
    eval_metrics: list[str] = field(default_factory=lambda: list(METRICS))
    syncnet: EvalSyncNetConfig = field(default_factory=EvalSyncNetConfig)
    identity: EvalIdentityConfig = field(default_factory=EvalIdentityConfig)  # CSIM's embedder (dlib: offline)
    generate_batch_size: int = 16  # the exported editor's frames per pass
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(out="runs/flashlips", batch_size=4, lr=1e-4,
                                                                  eval_every=100, checkpoint_every=100))


def data_config(cfg: FlashLipsConfig) -> PairDataConfig:
    return dataclasses.replace(cfg.data, manifests=list(cfg.manifests or cfg.data.manifests))


def check_config(cfg: FlashLipsConfig) -> None:
    from factory.models.latent_editor import LatentEditor
    from factory.models.lip_pose import LipPoseEncoder
    from factory.models.lip_pose_flow import LipPoseFlow

    if cfg.recipe != "flashlips-refine":
        raise ConfigError(f"config key 'recipe' is {cfg.recipe!r}: this is the 'flashlips-refine' recipe")
    if cfg.stage not in STAGES:
        raise ConfigError(f"config key 'stage' must be one of {', '.join(STAGES)}, not {cfg.stage!r}")
    if not data_config(cfg).manifests:
        raise ConfigError("config key 'manifests' is empty: give the pair manifests (manifest.json files or run "
                          "folders written by `factory run` / `factory pairs`)")
    check_metrics(cfg.eval_metrics, "eval_metrics")
    if cfg.data.reference_frames < 1:
        raise ConfigError("config key 'data.reference_frames' must be >= 1: the editor draws from references")
    if cfg.stage == "lip_flow":
        if cfg.init_from is None:
            raise ConfigError("config key 'init_from' is not set: the lip_flow stage needs the editor stage's final "
                              "folder (its lip-pose encoder defines the poses, and the dubber carries its editor)")
        if cfg.reference_poses < 1 or cfg.reference_poses > cfg.data.segment_frames:
            raise ConfigError(f"config key 'reference_poses' must lie in [1, data.segment_frames = "
                              f"{cfg.data.segment_frames}], not {cfg.reference_poses}")
        if cfg.sample_steps < 1:
            raise ConfigError("config key 'sample_steps' must be >= 1")
    for key, cls, kwargs in (("editor", LatentEditor, cfg.editor), ("lip_pose", LipPoseEncoder, cfg.lip_pose),
                             ("flow", LipPoseFlow, cfg.flow)):
        if kwargs is None:
            continue
        if not isinstance(kwargs, dict):
            raise ConfigError(f"config key '{key}' must be a mapping of {cls.__name__} arguments (or null: tiny)")
        unknown = sorted(set(kwargs) - set(inspect.signature(cls.__init__).parameters))
        if unknown:
            raise ConfigError(f"unknown config key '{key}.{unknown[0]}' (not a {cls.__name__} argument)")


def vae_source(cfg: FlashLipsConfig) -> dict[str, Any] | None:
    """Where a frozen local VAE lives ({"path", "subfolder"}), recorded in the exported editor folder
    instead of a copy; None: the VAE is saved in the folder (a tiny, trained or copied one)."""
    if cfg.vae_trainable:
        return None
    if cfg.init_from is not None:
        return json.loads((Path(cfg.init_from) / "config.json").read_text()).get("vae")
    if cfg.vae.path is not None:
        return {"path": str(Path(cfg.vae.path).resolve()), "subfolder": cfg.vae.subfolder}
    return None


# 2. the trained modules -------------------------------------------------------------------------

class LipFlowModule(nn.Module):
    """The lip-pose flow model (trained) beside the editor's lip-pose encoder (frozen) and the
    wav2vec 2.0 encoder (frozen; a plain attribute, so it is neither checkpointed nor exported:
    the dubber folder records where it lives). `forward(batch)` is the training loss."""

    def __init__(self, flow: nn.Module, lip_pose: nn.Module, audio, reference_poses: int):
        super().__init__()
        self.flow, self.lip_pose = flow, lip_pose.requires_grad_(False)
        self.audio, self.reference_poses = audio, reference_poses

    def poses(self, landmarks: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        """(B, T, K, 2) mouth landmarks and (B, 3, T, S, S) frames -> (B, T, P) lip poses."""
        from factory.models.editor_losses import frames_of

        b, t = landmarks.shape[:2]
        device = next(self.flow.parameters()).device
        with torch.no_grad():
            return self.lip_pose(landmarks.to(device).flatten(0, 1), frames_of(video.to(device))).float() \
                .unflatten(0, (b, t))

    def inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(target poses, audio windows, reference poses) of a pair batch: the real side's poses and
        audio, K poses of the synthetic side (frames drawn from the global RNG) as references."""
        device = next(self.flow.parameters()).device
        poses = self.poses(batch["mouth_landmarks"], batch["target"])
        others = self.poses(batch["syn_mouth_landmarks"], batch["synthetic"])
        pick = torch.stack([torch.randperm(others.shape[1])[:self.reference_poses] for _ in range(len(others))])
        references = torch.gather(others, 1, pick.to(device)[:, :, None].expand(-1, -1, others.shape[2]))
        audio = self.audio(batch["audio"]).to(device)
        return poses, audio, references

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from factory.models.lip_pose_flow import lip_flow_loss

        poses, audio, references = self.inputs(batch)
        loss = lip_flow_loss(self.flow, poses, audio, references)
        return loss, {"flow_mse": loss.detach()}


class PairBatches:
    """The train split for one rank as an endless stream of collated pair batches, resumable by
    the dataset's stream position (the last sample drawn + 1)."""

    def __init__(self, dataset: PairDataset):
        self.dataset, self.position = dataset, 0

    def __iter__(self) -> Iterator[dict]:
        self.dataset.start_at(self.position)
        # the DataLoader draws its base seed from the global RNG here, when the loop starts
        # iterating (before it restores a checkpoint's RNG), not at the first batch: a resumed
        # run's later global draws (the lip-flow stage's t, noise, references) then match
        return self._tracked(iter(pair_loader(self.dataset)))

    def _tracked(self, batches) -> Iterator[dict]:
        for batch in batches:
            self.position = int(batch["position"][-1]) + 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {**self.dataset.state_dict(), "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dataset.load_state_dict(state)
        self.position = int(state["position"])


# 3. the recipe ----------------------------------------------------------------------------------

class FlashLipsRecipe(Recipe):
    name = "flashlips-refine"
    Config = FlashLipsConfig
    free_keys = frozenset({"eval_segments", "generate_batch_size", "sample_steps", "eval_metrics", "syncnet",
                           "identity"})

    def __init__(self, config: FlashLipsConfig):
        check_config(config)
        super().__init__(config)
        self._eval_editor = self._eval_nets = None  # the eval's frozen networks, loaded at the first eval

    # -- models --

    def build_model(self, device: torch.device) -> nn.Module:
        return self._build_editor(device) if self.config.stage == "editor" else self._build_flow(device)

    def _start(self):
        """(editor, lip_pose, vae) from `init_from`, or fresh ones (tiny, or as configured)."""
        from factory.generators.latent_editor import LatentEditorGenerator
        from factory.models.latent_editor import LatentEditor
        from factory.models.lip_pose import LipPoseEncoder
        from factory.models.vae import load_vae_model

        cfg = self.config
        if cfg.init_from is not None:
            g = LatentEditorGenerator.from_pretrained(cfg.init_from, key="init_from")
            return g.editor, g.lip_pose, g.vae
        vae = load_vae_model(cfg.vae, key="vae")
        lip_pose = LipPoseEncoder(**(TINY_LIP_POSE if cfg.lip_pose is None else cfg.lip_pose))
        editor = LatentEditor(**{"num_references": cfg.data.reference_frames,
                                 **(TINY_EDITOR if cfg.editor is None else cfg.editor),
                                 "latent_channels": vae.config.latent_channels, "lip_dim": lip_pose.pose_dim})
        return editor, lip_pose, vae

    def _build_editor(self, device: torch.device) -> EditorModule:
        from factory.models.pair_editor_loss import PairEditorLoss

        cfg = self.config
        editor, lip_pose, vae = self._start()
        vae = vae.float().requires_grad_(False)
        if cfg.vae_trainable:
            vae.decoder.requires_grad_(True)
            if vae.post_quant_conv is not None:
                vae.post_quant_conv.requires_grad_(True)
        editor.requires_grad_(True)
        lip_pose.requires_grad_(cfg.train_lip_pose)
        factor = 2 ** (len(vae.config.block_out_channels) - 1) * editor.downsampling
        if cfg.data.resolution % factor:
            raise ConfigError(f"config key 'data.resolution' ({cfg.data.resolution}) must be a multiple of {factor} "
                              "(the VAE's and the editor's downsampling)")
        return EditorModule(editor, lip_pose, vae, PairEditorLoss(cfg.losses, key_prefix="losses."))

    def _build_flow(self, device: torch.device) -> LipFlowModule:
        from factory.models.lip_pose_flow import LipPoseFlow
        from factory.models.wav2vec_features import Wav2VecFeatures

        cfg = self.config
        _, lip_pose, _ = self._start()
        audio = Wav2VecFeatures(dataclasses.replace(cfg.wav2vec, device=str(device)), key="wav2vec")
        kwargs = dict(TINY_FLOW if cfg.flow is None else cfg.flow)
        kwargs.update(pose_dim=lip_pose.pose_dim, audio_dim=audio.dim, audio_window=audio.window)
        kwargs.setdefault("max_frames", max(cfg.data.segment_frames, 32))
        if kwargs["max_frames"] < cfg.data.segment_frames:
            raise ConfigError(f"config key 'flow.max_frames' ({kwargs['max_frames']}) is below data.segment_frames")
        module = LipFlowModule(LipPoseFlow(**kwargs), lip_pose.float(), audio, cfg.reference_poses).to(device)
        self._set_pose_stats(module)
        return module

    def _set_pose_stats(self, module: LipFlowModule) -> None:
        """Per-dimension mean and std of the real lip poses of the first training segments (rank 0's
        stream, so every rank gets the same): the flow works on normalised poses."""
        seen, poses = 0, []
        for batch in pair_loader(PairDataset(data_config(self.config), "train", batch_size=4)):
            poses.append(module.poses(batch["mouth_landmarks"], batch["target"]).flatten(0, 1))
            seen += len(batch["key"])
            if seen >= self.config.pose_stats_segments:
                break
        if not poses:
            raise ConfigError("the pair manifests hold no training segment (config key 'manifests')")
        every = torch.cat(poses)
        module.flow.pose_mean.copy_(every.mean(dim=0))
        module.flow.pose_std.copy_(every.std(dim=0).clamp(min=1e-4))

    # -- training --

    def train_batches(self, batch_size: int, rank: int, world_size: int, seed: int) -> PairBatches:
        # the order is seeded by data.seed (which also draws the held-out split), not loop.seed
        return PairBatches(PairDataset(data_config(self.config), "train", rank=rank, world_size=world_size,
                                       batch_size=batch_size))

    def loss(self, model: nn.Module, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        total, parts = model(batch)
        return total, {k: float(v) for k, v in parts.items()}

    def heldout(self) -> PairDataset:
        return PairDataset(data_config(self.config), "heldout", batch_size=4)

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        from factory.trainers.flashlips_eval import evaluate_editor, evaluate_lip_flow

        cfg = self.config
        if cfg.stage == "editor":
            return evaluate_editor(unwrap(model), self.heldout(), cfg.eval_segments, cfg.losses.scaling_factor,
                                   self.scorer(device))
        module = unwrap(model)
        scorer = self.scorer(device)
        return evaluate_lip_flow(module, self.heldout(), cfg.eval_segments, cfg.sample_steps, cfg.loop.seed,
                                 self.eval_dubber(module, device) if scorer.metrics else None, scorer)

    def eval_dubber(self, module: LipFlowModule, device: torch.device):
        """The dubber this run exports (init_from's editor and VAE, the flow model being trained), so
        the lip_flow stage's eval can dub held-out segments from their real audio. The editor is
        loaded once per process; the flow model is the live one (the caller's eval mode)."""
        from factory.generators.latent_editor import LatentEditorGenerator
        from factory.trainers.flashlips_dubber import DubberSettings, FlashLipsDubber

        cfg = self.config
        if self._eval_editor is None:
            g = LatentEditorGenerator.from_pretrained(cfg.init_from, key="init_from")
            self._eval_editor = tuple(m.to(device).float().eval().requires_grad_(False) for m in (g.editor, g.vae))
        editor, vae = self._eval_editor
        settings = DubberSettings(resolution=cfg.data.resolution, reference_frames=cfg.data.reference_frames,
                                  reference_poses=cfg.reference_poses, sample_steps=cfg.sample_steps,
                                  batch_size=cfg.generate_batch_size, seed=cfg.loop.seed)
        dubber = FlashLipsDubber(settings, editor=editor, lip_pose=module.lip_pose, vae=vae, flow=module.flow,
                                 audio=module.audio)
        dubber.device = torch.device(device)  # not .to(): that would freeze the flow model being trained
        return dubber

    def scorer(self, device: torch.device):
        """The measurement metrics' scorer, with whichever of its networks can be built here."""
        from factory.trainers.dubber_metrics import DubberScorer, build_embedder, build_syncnet, try_build

        cfg = self.config
        if self._eval_nets is None:  # built once: loading dlib or ArcFace at every eval would cost seconds
            self._eval_nets = (
                try_build(lambda: build_syncnet(cfg.syncnet, "syncnet", device)) if "sync" in cfg.eval_metrics
                else (None, ""),
                try_build(lambda: build_embedder(cfg.identity, "identity", device)) if "csim" in cfg.eval_metrics
                else (None, ""))
        (syncnet, sync_note), (embedder, csim_note) = self._eval_nets
        return DubberScorer(cfg.eval_metrics, syncnet=syncnet, sync_note=sync_note, embedder=embedder,
                            csim_note=csim_note)

    # -- export --

    def editor_generator(self, model: nn.Module):
        """The trained editor as a LatentEditorGenerator (CPU copies; the training ones untouched)."""
        import copy

        from factory.generators.latent_editor import LatentEditorGenerator, LatentEditorSettings

        module, cfg = unwrap(model), self.config
        settings = LatentEditorSettings(resolution=cfg.data.resolution, batch_size=cfg.generate_batch_size,
                                        reference_frames=cfg.data.reference_frames)
        parts = {name: copy.deepcopy(getattr(module, name)).cpu().float() for name in ("editor", "lip_pose", "vae")}
        return LatentEditorGenerator(settings, vae_source=vae_source(cfg), **parts)

    def save_pretrained(self, model: nn.Module, path: Path) -> None:
        """editor stage: a latent_editor generator folder; lip_flow stage: a dubber folder (the
        editor folder it was trained against, copied, plus the flow model and the audio encoder's place)."""
        if self.config.stage == "editor":
            self.editor_generator(model).save_pretrained(path)
            return
        from factory.files import atomic_write
        from factory.trainers.flashlips_dubber import DUBBER_NAME, VERSION, DubberSettings

        cfg, module = self.config, unwrap(model)
        path.mkdir(parents=True, exist_ok=True)
        shutil.copytree(cfg.init_from, path / "editor", dirs_exist_ok=True)
        module.flow.save_pretrained(path / "lip_flow")
        wav2vec = dataclasses.asdict(cfg.wav2vec)
        wav2vec.pop("device")
        if wav2vec["path"] is not None:
            wav2vec["path"] = str(Path(wav2vec["path"]).resolve())
        settings = DubberSettings(resolution=cfg.data.resolution, reference_frames=cfg.data.reference_frames,
                                  reference_poses=cfg.reference_poses, sample_steps=cfg.sample_steps,
                                  batch_size=cfg.generate_batch_size)
        config = {"dubber": DUBBER_NAME, "version": VERSION, "settings": dataclasses.asdict(settings),
                  "wav2vec": wav2vec}
        atomic_write(path / "config.json", json.dumps(config, indent=2, sort_keys=True))
