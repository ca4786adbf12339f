"""The settings of `factory eval`: one `eval` section, so every key reads `eval.<name>` in
messages, YAML files and `key=value` overrides alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from factory.config import ConfigError, apply_overrides, build, read_yaml

ALL_METRICS = ["psnr", "ssim", "lpips", "lmd", "csim", "sync", "fid", "fvd"]
# How the standard TorchScripts are called for features (a dict override merges into a default
# dict instead of replacing it, so the defaults live here and `eval.fid_kwargs={}` means none)
FID_KWARGS = {"return_features": True}
FVD_KWARGS = {"rescale": False, "resize": False, "return_features": True}


@dataclass
class EvalConfig:
    # what to measure: a manifest (or a finished run's folder holding manifest.json) ...
    manifest: str | None = None
    # ... or a folder of generated videos and a folder of references, matched by file name stem
    generated: str | None = None
    reference: str | None = None
    # the audio the generated lips should follow (folder input): `reference`, `generated` (the
    # generated file's own track) or a folder of audio/video files matched by stem. A manifest's
    # pairs always use alt.wav: V_syn was re-dubbed from it.
    audio: str = "reference"
    out: str = "eval.json"  # the JSON report; the table goes to stdout
    metrics: list[str] = field(default_factory=lambda: list(ALL_METRICS))
    max_items: int | None = None  # evaluate only the first N items (sorted by name)
    fps: int = 25
    sample_rate: int = 16000
    frames_per_item: int = 16  # evenly spaced frames per clip for LPIPS, CSIM and FID
    device: str = "cpu"
    # identity: dlib works offline (its weights ship in face-recognition-models); arcface needs a local ONNX
    csim_backend: str = "dlib"
    arcface_path: str | None = None
    face_crop: int = 256  # side of the template-aligned face crops CSIM sees
    # LPIPS: lpips ships its linear heads; the backbone's ImageNet weights are torchvision's
    # state dict of `lpips_net` (alexnet-owt-7be5be79.pth, vgg16-397923af.pth, squeezenet1_1-b8a52dc0.pth)
    lpips_net: str = "alex"
    lpips_backbone_path: str | None = None
    # FID: a TorchScript feature network taking (N, 3, S, S) float 0..255, e.g. the Inception of
    # clean-fid / StyleGAN (inception-2015-12-05.pt, called with return_features=True)
    fid_extractor_path: str | None = None
    fid_size: int = 299
    fid_kwargs: dict[str, Any] | None = None  # keyword arguments of the call; null: FID_KWARGS
    # FVD: a TorchScript video network taking (B, 3, T, S, S) float -1..1, e.g. StyleGAN-V's
    # i3d_torchscript.pt (called with rescale=False, resize=False, return_features=True)
    fvd_extractor_path: str | None = None
    fvd_size: int = 224
    fvd_frames: int = 16  # frames per FVD clip (non-overlapping windows of each video)
    fvd_kwargs: dict[str, Any] | None = None  # null: FVD_KWARGS
    # Sync-C / Sync-D: SyncNet weights at a local path (factory.metrics.sync computes the scores)
    syncnet_path: str | None = None
    sync_max_offset: int = 15
    sync_crop: int = 224  # side of the aligned face crops handed to SyncNet (syncnet_python: 224)


@dataclass
class EvalSettings:
    eval: EvalConfig = field(default_factory=EvalConfig)


def load_eval_config(path: str | Path | None = None, overrides: Iterable[str] = (),
                     target: str | None = None) -> EvalConfig:
    """The eval section from an optional YAML file and `eval.key=value` overrides; `target` (a
    run folder or a manifest) fills `eval.manifest`."""
    data = apply_overrides(read_yaml(path), overrides)
    if target is not None:
        data.setdefault("eval", {})["manifest"] = target
    cfg = build(EvalSettings, data).eval
    unknown = [m for m in cfg.metrics if m not in ALL_METRICS]
    if unknown:
        raise ConfigError(f"config key 'eval.metrics': unknown metric(s) {unknown} (known: {ALL_METRICS})")
    if cfg.manifest is None and (cfg.generated is None or cfg.reference is None):
        raise ConfigError("nothing to evaluate: give a run folder or manifest (eval.manifest), "
                          "or both eval.generated and eval.reference")
    if cfg.manifest is not None and cfg.generated is not None:
        raise ConfigError("give either eval.manifest or eval.generated/eval.reference, not both")
    return cfg
