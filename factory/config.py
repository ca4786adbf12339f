"""Typed run configuration: YAML files in configs/, `key=value` overrides, unknown keys rejected."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from factory.files import atomic_write

class ConfigError(ValueError):
    """A bad config: unknown key, wrong type, missing file. The CLI exits non-zero on it."""


@dataclass
class InputConfig:
    paths: list[str] = field(default_factory=list)  # video files or folders (searched recursively)
    demo: bool = False  # make the embedded demo videos (real face photo + espeak-ng speech) first
    speaker_map: str | None = None  # JSON {video path or stem: speaker id}; default speaker = video
    extensions: list[str] = field(default_factory=lambda: [".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"])


@dataclass
class ExecutorConfig:
    kind: str = "ray"  # "ray" or "local" (in-process, for debugging and tests)
    address: str | None = None  # None: embedded Ray (or the cluster of a `ray job submit`)
    num_cpus: int | None = None  # embedded Ray only
    num_gpus: int | None = None  # embedded Ray only
    gpu_wait_s: float = 30.0  # how long a GPU stage waits for a GPU to appear before failing
    max_retries: int = 2  # per batch, when a worker dies
    progress: bool = True


@dataclass
class IngestConfig:
    fps: int = 25
    sample_rate: int = 16000
    crop_size: int = 256
    clip_frames: int = 77
    clip_stride: int = 77  # frames between clip starts; < clip_frames overlaps clips
    max_clips_per_video: int | None = None
    min_resolution: int = 64  # shorter side in pixels
    max_faces: int = 1  # frames with more faces than this are not used
    scene_cut_threshold: float = 0.35  # histogram distance (0..1) between consecutive frames
    landmark_smoothing: float = 0.5  # EMA weight of the previous frame's landmarks (0 = none)
    vad_threshold: float = 0.5
    min_speech_ratio: float = 0.2  # share of a clip's audio that must be speech
    pool_size: int = 2
    num_cpus: float = 1.0


@dataclass
class PairConfig:
    cross_video: bool = False  # also pair clips of the same speaker from other videos
    min_mouth_difference: float = 0.0  # mouth-opening difference (template px) below which no pair is made


@dataclass
class GenerateConfig:
    generator: str = "transplant"
    weights: str | None = None  # learned generators: local path to their weights
    feather_sigma: float = 5.0  # Gaussian feathering of the composite, in crop pixels
    mask_dilation: int = 10  # pixels; outside the dilated mask, the synthetic frame equals the real one
    colour_match: bool = True
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    pool_size: int = 2
    batch_size: int = 1


@dataclass
class MouthDistanceConfig:
    enabled: bool = True
    min_lmd: float = 1.0  # X-Dub's rule; unit documented in filters/mouth_distance.py


@dataclass
class IdentityConfig:
    enabled: bool = True
    backend: str = "dlib"  # "dlib": ResNet weights shipped in face-recognition-models; "arcface": insightface ONNX
    arcface_path: str | None = None  # local ArcFace ONNX (e.g. w600k_r50.onnx), needed by backend=arcface
    min_csim: float | None = None  # keep when CSIM >= this; None: the backend's calibrated default
    frames: int = 8  # frames sampled evenly from each clip
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    pool_size: int = 2


@dataclass
class VLMQualityConfig:
    enabled: bool = False
    model_path: str | None = None  # local Qwen2.5-VL folder (config, weights, tokenizer, processor)
    min_mean: float = 4.0  # keep when the mean of the six 1-5 aspect scores is above this
    frames: int = 8  # frames of the synthetic clip shown to the model
    max_pixels: int = 224 * 224  # per frame, after the processor's resize
    max_new_tokens: int = 160
    batch_size: int = 4
    num_gpus: float = 1.0
    num_cpus: float = 1.0
    pool_size: int = 1


@dataclass
class FiltersConfig:
    mouth_distance: MouthDistanceConfig = field(default_factory=MouthDistanceConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    vlm_quality: VLMQualityConfig = field(default_factory=VLMQualityConfig)


@dataclass
class OcclusionConfig:
    """Occlusion masks before generation: the VLM boxes occluders, SAM 2 propagates their masks, and
    the generator keeps those pixels (M_inp = not M_face or M_occ)."""

    enabled: bool = False
    vlm_path: str | None = None  # local Qwen2.5-VL folder; None: filters.vlm_quality.model_path
    sam2_config: str = "configs/sam2.1/sam2.1_hiera_t.yaml"  # a config inside the sam2 package
    sam2_checkpoint: str | None = None  # local SAM 2 checkpoint (.pt), e.g. sam2.1_hiera_tiny.pt
    image_size: int = 512  # SAM 2 input resolution (1024 in the released models)
    probe_frames: int = 3  # frames of each clip the VLM is asked about (first, middle, last)
    num_gpus: float = 1.0
    num_cpus: float = 1.0
    pool_size: int = 1


@dataclass
class AugmentConfig:
    share: float = 0.05  # fraction of kept pairs augmented (the same transform on both sides)
    occlusion: bool = True  # moving synthetic occluders: textured shapes, hand-like blobs
    relight: bool = True  # static colour/intensity, or a moving coloured light


@dataclass
class WriteConfig:
    shard_maxcount: int = 64
    shard_maxsize: int = 1_000_000_000
    video_crf: int = 18
    previews: int = 16  # side-by-side previews to write (0 = none)
    keep_rejected: bool = True  # pairs failing a threshold go to rejected-*.tar, so refilter can loosen


@dataclass
class FactoryConfig:
    out: str = "runs/demo"
    seed: int = 0
    input: InputConfig = field(default_factory=InputConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    pair: PairConfig = field(default_factory=PairConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    occlusion: OcclusionConfig = field(default_factory=OcclusionConfig)
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    write: WriteConfig = field(default_factory=WriteConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Identifies the settings that shape samples (not where they go or how they run)."""
        d = self.to_dict()
        d.pop("out"), d.pop("executor")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _build(cls: type, data: dict[str, Any], path: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{path or 'root'}' must be a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(f"unknown config key '{where}{unknown[0]}' (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        sub = f"{path}.{name}" if path else name
        kwargs[name] = _build(hint, value, sub) if dataclasses.is_dataclass(hint) else _coerce(hint, value, sub)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, path: str) -> Any:
    text = str(hint)
    if value is None:
        if "None" in text:
            return None
        raise ConfigError(f"config key '{path}' may not be null")
    base = getattr(hint, "__origin__", None)
    if hint is bool or text.startswith("bool"):
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{path}' must be true/false, got {value!r}")
        return value
    if hint is int or text.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{path}' must be an integer, got {value!r}")
        return value
    if hint is float or text.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{path}' must be a number, got {value!r}")
        return float(value)
    if hint is str or text.startswith("str"):
        return str(value)
    if base is list or text.startswith("list"):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"config key '{path}' must be a list, got {value!r}")
        return [str(v) for v in value]
    return value


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not of the form key=value")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else None  # data only: no value is ever executed
    return key.strip().split("."), value


def load_config(path: str | Path | None, overrides: list[str] = ()) -> FactoryConfig:
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        data = yaml.safe_load(p.read_text()) or {}
    for item in overrides:
        keys, value = _parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{k}' is not a section")
        node[keys[-1]] = value
    return _build(FactoryConfig, data, "")


def save_config(cfg: FactoryConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
