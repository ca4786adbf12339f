"""The measurement metrics of a dubber's held-out evaluation, shared by `xdub-stage2` and
`flashlips-refine`: generated frames scored against the real frames and the driving (real) audio
with the numbers of factory/metrics, the same functions `factory eval` and the filters use.

Per held-out segment and per scored source (the trainer's output, and the baselines that make its
number readable: the synthetic input, and for Sync the real frames themselves, its ceiling):

- `sync_c_<source>` / `sync_d_<source>`: Sync-C / Sync-D of the frames against the real audio
  (factory.metrics.sync.sync_scores) with the recipe's SyncNet. The frames are the pairs' aligned
  face crops, the geometry the SyncNet trains on;
- `csim_<source>`: identity cosine against the real frames (factory.metrics.csim) on `csim_frames`
  evenly spaced frames, with an embedder of template-aligned crops (dlib, ArcFace, or the recipe's
  torch identity net);
- `lmd_<source>`: mouth landmark distance against the real frames (factory.metrics.lmd), both sides'
  landmarks found by the same detector on the same crops (MediaPipe, factory/faces/landmarks.py,
  as `factory eval` does); frames where either side has no face are left out;
- `psnr_<source>`: full-frame PSNR (factory.metrics.pixels) in dB, capped at 100 dB (identical frames)
  so metrics.json stays finite. The recipes' mouth-region PSNR stays `mouth_psnr_<source>`.

Numbers are means over segments. A number that cannot be measured is never made up: no SyncNet, no
identity net or segments too short give `<metric>_skipped` (the segments left out) and the reason
in `notes` (logged once); `lmd_skipped_frames` counts frames without a face on one side beside
`lmd_frames`, the frames compared.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from factory.config import ConfigError
from factory.metrics.frames import evenly_spaced

log = logging.getLogger(__name__)

METRICS = ("sync", "csim", "lmd", "psnr")
PSNR_CAP = 100.0  # dB: identical frames (the recipes' mouth PSNR floors its error at the same 1e-10)
SAMPLES_PER_FRAME = 640  # 16 kHz at 25 fps


# 1. settings and the networks the metrics need ----------------------------------------------

@dataclass
class EvalSyncNetConfig:
    """Where the evaluation's SyncNet comes from (the shape of xdub-stage2's `syncnet` section)."""
    path: str | None = None  # a `factory train-syncnet` folder or syncnet_python's syncnet_v2.model
    tiny: Any = None  # SyncNetConfig kwargs: a random StableSyncNet (tests, CPU demo); typed Any (free keys)
    seed: int = 0


@dataclass
class EvalIdentityConfig:
    """The embedder CSIM uses: dlib (its weights ship in face-recognition-models: works offline on
    CPU), arcface (a local ONNX for onnxruntime, as the identity filter) or tiny (random, tests)."""
    backend: str = "dlib"
    path: str | None = None
    seed: int = 0


def check_metrics(names: list[str], key: str) -> None:
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ConfigError(f"config key '{key}': unknown metric(s) {unknown} (known: {list(METRICS)})")


def build_syncnet(cfg: EvalSyncNetConfig, key: str, device: torch.device | str = "cpu"):
    """The frozen SyncNet of `cfg` (tiny random, or local weights); ConfigError naming `key` when
    neither is set."""
    if cfg.tiny is not None:
        from factory.models.syncnet import SyncNet, SyncNetConfig

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            net = SyncNet(SyncNetConfig(**cfg.tiny))
    elif cfg.path:
        from factory.models.syncnet_s import load_syncnet

        net = load_syncnet(cfg.path, device="cpu", key=f"{key}.path")
    else:
        raise ConfigError(f"config key '{key}.path' is not set (nor '{key}.tiny'): the SyncNet loss and Sync-C/D "
                          "need a local SyncNet (`factory train-syncnet` folder or syncnet_v2.model)")
    return net.eval().requires_grad_(False).to(device)


class TorchEmbedder:
    """A torch identity net on (B, 3, S, S) crops in [-1, 1] (factory/models/identity_net.py)
    behind the `embed(uint8 crops) -> (N, D) unit rows` interface of factory/faces/embedders.py."""

    def __init__(self, net: torch.nn.Module):
        self.net = net

    @torch.no_grad()
    def embed(self, crops: np.ndarray) -> np.ndarray:
        device = next(self.net.parameters()).device
        x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().to(device) / 127.5 - 1
        return self.net(x).float().cpu().numpy()


def build_embedder(cfg: EvalIdentityConfig, key: str, device: torch.device | str = "cpu"):
    if cfg.backend == "dlib":
        from factory.faces.embedders import DlibEmbedder

        return DlibEmbedder()
    if cfg.backend == "arcface":
        from factory.faces.embedders import ArcFaceEmbedder

        if not cfg.path:
            raise ConfigError(f"config key '{key}.path' is not set: ArcFace needs a local ONNX (e.g. w600k_r50.onnx)")
        return ArcFaceEmbedder(cfg.path, str(device), config_key=f"{key}.path")
    if cfg.backend == "tiny":
        from factory.models.identity_net import load_identity_net

        return TorchEmbedder(load_identity_net("tiny", seed=cfg.seed, device=device))
    raise ConfigError(f"config key '{key}.backend' must be dlib, arcface or tiny, not {cfg.backend!r}")


def try_build(make: Callable[[], Any]) -> tuple[Any, str]:
    """(the network, "") or (None, why not): a missing network skips its metric, never the eval."""
    try:
        return make(), ""
    except (ConfigError, FileNotFoundError, ImportError, ValueError) as exc:
        return None, str(exc)


# 2. frames -----------------------------------------------------------------------------------

def to_uint8(video: torch.Tensor) -> np.ndarray:
    """(3, T, S, S) in [-1, 1] -> (T, S, S, 3) uint8, as the metrics take frames."""
    x = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()


def face_landmarks(frames: np.ndarray, landmarker) -> np.ndarray:
    """(T, 478, 2) MediaPipe landmarks of (T, S, S, 3) frames, NaN where no face (factory eval's way)."""
    from factory.faces.landmarks import NUM_LANDMARKS

    out = np.full((len(frames), NUM_LANDMARKS, 2), np.nan)
    landmarker.reset()  # a new segment: no track to follow
    for i, frame in enumerate(frames):
        faces = landmarker.detect(frame)
        if faces:
            out[i] = faces[0][:, :2]
    return out


# 3. the scorer -------------------------------------------------------------------------------

class DubberScorer:
    """Collects held-out segments (`add`), then `result()` gives the means and skip counts.

    `sources` name the generated videos scored against the real one (the trainer's output first,
    then baselines such as the synthetic input); Sync also scores the real frames (`real`)."""

    def __init__(self, metrics: list[str] | tuple[str, ...] = METRICS, *, syncnet=None, sync_note: str = "",
                 embedder=None, csim_note: str = "", csim_frames: int = 4, sync_max_offset: int = 15):
        self.metrics = [m for m in METRICS if m in metrics]
        self.syncnet, self.embedder = syncnet, embedder
        self.csim_frames, self.sync_max_offset = csim_frames, sync_max_offset
        self.notes: dict[str, str] = {}
        if "sync" in self.metrics and syncnet is None:
            self.notes["sync"] = sync_note or "no SyncNet configured"
        if "csim" in self.metrics and embedder is None:
            self.notes["csim"] = csim_note or "no identity net configured"
        self._values: dict[str, list[float]] = {}
        self._counts: dict[str, float] = {}
        self._landmarker = None

    def _add(self, key: str, value: float) -> None:
        self._values.setdefault(key, []).append(float(value))

    def _count(self, key: str, n: float = 1.0) -> None:
        self._counts[key] = self._counts.get(key, 0.0) + n

    def add(self, generated: dict[str, torch.Tensor], real: torch.Tensor, audio: torch.Tensor) -> None:
        """generated: source name -> (B, 3, T, S, S) in [-1, 1], frame-aligned with `real`;
        audio: (B, >= T * 640) 16 kHz float, starting at the first of these frames."""
        for b in range(len(real)):
            real_frames = to_uint8(real[b])
            sides = {name: to_uint8(video[b]) for name, video in generated.items()}
            if "psnr" in self.metrics:
                from factory.metrics.pixels import psnr

                for name, frames in sides.items():
                    self._add(f"psnr_{name}", min(psnr(frames, real_frames), PSNR_CAP))
            if "csim" in self.metrics:
                self._csim(sides, real_frames)
            if "lmd" in self.metrics:
                self._lmd(sides, real_frames)
            if "sync" in self.metrics:
                wav = audio[b, :len(real_frames) * SAMPLES_PER_FRAME].detach().float().cpu().numpy()
                self._sync({**sides, "real": real_frames}, wav)

    def _csim(self, sides: dict[str, np.ndarray], real: np.ndarray) -> None:
        from factory.metrics.csim import csim

        if self.embedder is None:
            self._count("csim_skipped")
            return
        idx = evenly_spaced(len(real), self.csim_frames)
        anchor = self.embedder.embed(real[idx])
        for name, frames in sides.items():
            self._add(f"csim_{name}", csim(anchor, self.embedder.embed(frames[idx])))

    def _lmd(self, sides: dict[str, np.ndarray], real: np.ndarray) -> None:
        from factory.metrics.lmd import mouth_distance

        if self._landmarker is None:
            from factory.faces.landmarks import FaceLandmarker

            self._landmarker = FaceLandmarker(static=True)  # segments are short and unrelated: no tracking
        real_lm = face_landmarks(real, self._landmarker)
        real_face = ~np.isnan(real_lm).any(axis=(1, 2))
        for name, frames in sides.items():
            lm = face_landmarks(frames, self._landmarker)
            both = real_face & ~np.isnan(lm).any(axis=(1, 2))
            self._count("lmd_frames", float(both.sum()))
            self._count("lmd_skipped_frames", float((~both).sum()))
            if both.any():
                self._add(f"lmd_{name}", mouth_distance(lm, real_lm))
            if not both.all():
                self.notes.setdefault("lmd", f"MediaPipe found no face in some {len(real)}-frame segments' frames "
                                             f"({real.shape[1]} px: too small, or not yet a face); those frames are "
                                             "left out (lmd_skipped_frames)")

    def _sync(self, sides: dict[str, np.ndarray], wav: np.ndarray) -> None:
        from factory.metrics.sync import sync_scores

        if self.syncnet is None:
            self._count("sync_skipped")
            return
        frames = len(wav) // SAMPLES_PER_FRAME
        window = self.syncnet.window
        if frames - window + 1 < 3:  # Sync-C compares offsets: fewer than +-1 makes it 0 by construction
            self._count("sync_skipped")
            self.notes.setdefault("sync", f"segments of {frames} frames are too short for Sync-C/D: a "
                                          f"{window}-frame SyncNet window needs {window + 2} frames for offsets +-1")
            return
        for name, video in sides.items():
            s = sync_scores(self.syncnet, video, wav, max_offset=self.sync_max_offset)
            self._add(f"sync_c_{name}", s.confidence)
            self._add(f"sync_d_{name}", s.min_dist)

    def result(self) -> dict[str, float]:
        if self._landmarker is not None:
            self._landmarker.close()
            self._landmarker = None
        out = {k: float(np.mean(v)) for k, v in self._values.items() if v}
        out.update(self._counts)
        for metric, why in self.notes.items():
            if metric not in _logged:
                _logged.add(metric)
                log.warning("held-out %s: %s", metric, why)
        return {k: v for k, v in out.items() if not math.isnan(v)}


_logged: set[str] = set()  # say each skip reason once per process, not at every evaluation
