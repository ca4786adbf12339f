"""SyncNet in the LatentSync StableSyncNet design: is this audio in sync with these lips?

A visual encoder reads the lower half of the aligned face over `frames` consecutive frames (the
frames stacked on the channel axis, 3 x 16 = 48 channels in LatentSync), an audio encoder reads the
80-bin log-mel window covering the same time (52 mel steps for 16 frames at 25 fps); both end in
an `embed_dim` vector (2048 in LatentSync) and the cosine similarity of the two says "in sync".
Training is binary cross-entropy on that similarity (factory/trainers/syncnet.py).

Sizes are constructor arguments, so a tiny one trains on CPU in a test and the LatentSync-sized
one (`SyncNetConfig()` defaults) on GPUs. The mel follows Wav2Lip/LatentSync `audio.py` (hop 200,
window 800, 55-7600 Hz, Slaney mel, dB normalised to [-4, 4]), computed here with torch alone.

Two similarity heads (`loss`):
- "cosine": LatentSync/Wav2Lip exactly: embeddings through ReLU, cosine in [0, 1] is the
  probability. Known to sit at loss 0.693 with small batches (LatentSync found 1024 best).
- "scaled_cosine": probability = sigmoid(s * cosine + b) with a learned scale and bias
  (SigLIP-style); the same embeddings, trains from small batches (the CPU recipe).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
LAYOUT = "stable_syncnet"


class SyncNetWeightsError(ValueError):
    """Weights that do not fit the layout (or are missing): says which keys and what to set."""


# 1. config ------------------------------------------------------------------------------------

@dataclass
class SyncNetConfig:
    frames: int = 16  # video frames per window
    image_size: int = 256  # face crop side; the visual input is its lower half: size/2 x size
    fps: int = 25
    sample_rate: int = 16000
    n_mels: int = 80
    hop_length: int = 200  # 80 mel steps a second: 3.2 per video frame at 25 fps
    win_length: int = 800
    visual_channels: list[int] = field(default_factory=lambda: [64, 128, 256, 256, 512, 1024, 2048])
    audio_channels: list[int] = field(default_factory=lambda: [64, 128, 256, 256, 512, 1024, 2048])
    embed_dim: int = 2048
    norm_groups: int = 32  # GroupNorm groups (at most the channel count of a layer)
    stem_stride: int = 1  # 2 halves both inputs before the first block (a CPU-sized net)
    center_frames: bool = False  # subtract each window's mean frame: the visual net sees the mouth move, not the face
    loss: str = "cosine"  # "cosine" (LatentSync) | "scaled_cosine" (learned scale and bias)
    feature_scale: float = 10.0  # sync_features = unit embedding * this: Sync-C/D near syncnet_python's scale

    @property
    def mel_steps(self) -> int:
        """Mel steps in one window (52 for 16 frames at 25 fps, hop 200)."""
        return math.ceil(self.frames * self.mel_rate / self.fps)

    @property
    def mel_rate(self) -> float:
        return self.sample_rate / self.hop_length


# 2. audio features: the Wav2Lip / LatentSync mel ------------------------------------------------

def _hz_to_mel(f: np.ndarray) -> np.ndarray:  # Slaney (librosa's default, htk=False)
    f = np.asarray(f, np.float64)
    mel = f / (200.0 / 3)
    log_region = f >= 1000.0
    return np.where(log_region, 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) / (np.log(6.4) / 27.0), mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3))


def mel_filters(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 55.0, fmax: float = 7600.0) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) Slaney-normalised triangular filters (librosa.filters.mel)."""
    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff, ramps = np.diff(mel_f), mel_f[:, None] - fft_freqs[None, :]
    lower, upper = -ramps[:-2] / fdiff[:-1, None], ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


def log_mel(audio: np.ndarray, cfg: SyncNetConfig) -> np.ndarray:
    """(n_mels, 1 + len // hop) float32 in [-4, 4] from mono audio (int16 or float in [-1, 1])."""
    wav = np.asarray(audio)
    wav = wav.astype(np.float32) / 32768.0 if wav.dtype == np.int16 else wav.astype(np.float32)
    wav = np.append(wav[:1], wav[1:] - 0.97 * wav[:-1])  # pre-emphasis
    x = torch.from_numpy(wav)
    pad = cfg.win_length // 2
    if len(x) <= pad:
        x = F.pad(x, (0, pad + 1 - len(x)))
    spec = torch.stft(x, n_fft=cfg.win_length, hop_length=cfg.hop_length, win_length=cfg.win_length,
                      window=torch.hann_window(cfg.win_length), center=True, pad_mode="reflect",
                      return_complex=True).abs()
    mel = torch.from_numpy(mel_filters(cfg.sample_rate, cfg.win_length, cfg.n_mels)) @ spec
    db = 20 * torch.log10(torch.clamp(mel, min=1e-5)) - 20.0  # ref_level_db 20
    return torch.clamp(8.0 * (db + 100.0) / 100.0 - 4.0, -4.0, 4.0).numpy()  # min_level_db -100


def mel_window(mel: np.ndarray, start_frame: int, cfg: SyncNetConfig) -> np.ndarray:
    """The (n_mels, mel_steps) window of video frames [start, start + frames), zero-padded past the end
    (Wav2Lip: start = int(80 * frame / fps))."""
    s = int(cfg.mel_rate * start_frame / cfg.fps)
    out = np.full((mel.shape[0], cfg.mel_steps), -4.0, np.float32)  # -4: silence
    piece = mel[:, max(s, 0):s + cfg.mel_steps]
    if s >= 0:
        out[:, :piece.shape[1]] = piece
    return out


def lower_half(frames: np.ndarray, cfg: SyncNetConfig) -> np.ndarray:
    """(T, S, S, 3) uint8 aligned crops -> (T, 3, size/2, size) float32 in [-1, 1]: the lower half."""
    import cv2

    size = cfg.image_size
    out = np.empty((len(frames), 3, size // 2, size), np.float32)
    for i, frame in enumerate(frames):
        if frame.shape[0] != size:
            interp = cv2.INTER_AREA if frame.shape[0] > size else cv2.INTER_LINEAR
            frame = cv2.resize(frame, (size, size), interpolation=interp)
        out[i] = frame[size // 2:].transpose(2, 0, 1)
    return out / 127.5 - 1.0


# 3. encoders --------------------------------------------------------------------------------

def _norm(channels: int, groups: int) -> nn.GroupNorm:
    g = math.gcd(channels, min(groups, channels))
    return nn.GroupNorm(g, channels)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin, groups), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _norm(cout, groups), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Encoder(nn.Module):
    """conv in, then per level a residual block and a stride-2 downsample, global average, linear."""

    def __init__(self, in_channels: int, channels: list[int], embed_dim: int, groups: int, stem_stride: int = 1):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, stride=stem_stride, padding=1)
        blocks, prev = [], channels[0]
        for ch in channels:
            blocks += [ResBlock(prev, ch, groups), nn.Conv2d(ch, ch, 3, stride=2, padding=1)]
            prev = ch
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = _norm(prev, groups)
        self.proj = nn.Linear(prev, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm_out(self.blocks(self.conv_in(x))))
        return self.proj(h.mean(dim=(2, 3)))


# 4. the network -----------------------------------------------------------------------------

class SyncNet(nn.Module):
    """`forward(visual (B, 3*frames, size/2, size), mel (B, 1, n_mels, mel_steps))` -> sync
    probability (B,). `embed_*` give the embeddings; `video_features` / `audio_features` the
    per-window features that factory.metrics.sync.sync_scores compares."""

    layout = LAYOUT

    def __init__(self, config: SyncNetConfig | None = None, **kwargs):
        super().__init__()
        self.config = config = config or SyncNetConfig(**kwargs)
        if config.loss not in ("cosine", "scaled_cosine"):
            raise ValueError(f"SyncNet loss must be 'cosine' or 'scaled_cosine', not {config.loss!r}")
        self.visual = Encoder(3 * config.frames, config.visual_channels, config.embed_dim, config.norm_groups,
                              config.stem_stride)
        self.audio = Encoder(1, config.audio_channels, config.embed_dim, config.norm_groups, config.stem_stride)
        if config.loss == "scaled_cosine":
            self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
            self.logit_bias = nn.Parameter(torch.tensor(-5.0))

    @property
    def window(self) -> int:
        return self.config.frames

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _unit(self, e: torch.Tensor) -> torch.Tensor:
        if self.config.loss == "cosine":  # LatentSync/Wav2Lip: non-negative embeddings, cosine in [0, 1]
            e = F.relu(e)
        return F.normalize(e, dim=1, eps=1e-6)

    def embed_visual(self, visual: torch.Tensor) -> torch.Tensor:
        if self.config.center_frames:
            x = visual.unflatten(1, (self.config.frames, 3))
            visual = (x - x.mean(1, keepdim=True)).flatten(1, 2)
        return self._unit(self.visual(visual))

    def embed_audio(self, mel: torch.Tensor) -> torch.Tensor:
        return self._unit(self.audio(mel))

    def probability(self, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        cos = (v * a).sum(1)
        if self.config.loss == "cosine":
            return cos.clamp(1e-6, 1 - 1e-6)
        return torch.sigmoid(self.logit_scale.exp() * cos + self.logit_bias)

    def logits(self, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        p = self.probability(v, a)
        if self.config.loss == "cosine":
            return torch.log(p) - torch.log1p(-p)
        return self.logit_scale.exp() * (v * a).sum(1) + self.logit_bias

    def forward(self, visual: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        return self.probability(self.embed_visual(visual), self.embed_audio(mel))

    # -- windows of a clip, for sync_scores ------------------------------------------------------

    def visual_windows(self, frames: np.ndarray) -> torch.Tensor:
        """(T, S, S, 3) uint8 -> (T - frames + 1, 3*frames, size/2, size): every window start."""
        x = torch.from_numpy(lower_half(frames, self.config))
        n = len(frames) - self.window + 1
        return torch.stack([x[i:i + self.window].flatten(0, 1) for i in range(n)]) if n > 0 else x[:0]

    def mel_windows(self, audio: np.ndarray, sample_rate: int, starts: range) -> torch.Tensor:
        if sample_rate != self.config.sample_rate:
            raise ValueError(f"SyncNet expects {self.config.sample_rate} Hz audio, got {sample_rate}")
        mel = log_mel(audio, self.config)
        return torch.from_numpy(np.stack([mel_window(mel, s, self.config) for s in starts]))[:, None]

    @torch.no_grad()
    def video_features(self, frames: np.ndarray, batch: int = 64) -> torch.Tensor:
        x = self.visual_windows(frames)
        out = [self.embed_visual(x[i:i + batch].to(self.device)) for i in range(0, len(x), batch)]
        return torch.cat(out).float().cpu() * self.config.feature_scale

    @torch.no_grad()
    def audio_features(self, audio: np.ndarray, sample_rate: int, count: int, batch: int = 64) -> torch.Tensor:
        x = self.mel_windows(audio, sample_rate, range(count))
        out = [self.embed_audio(x[i:i + batch].to(self.device)) for i in range(0, len(x), batch)]
        return torch.cat(out).float().cpu() * self.config.feature_scale

    # -- checkpoints -------------------------------------------------------------------------

    def save_pretrained(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_NAME).write_text(json.dumps({"layout": LAYOUT, **asdict(self.config)}, indent=1))
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(path / WEIGHTS_NAME))
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu", key: str = "syncnet_path") -> "SyncNet":
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
            raise SyncNetWeightsError(f"{key} = {str(path)!r}: no {CONFIG_NAME} + {WEIGHTS_NAME} there "
                                      "(a folder written by `factory train-syncnet`)")
        saved = json.loads((path / CONFIG_NAME).read_text())
        if saved.pop("layout", LAYOUT) != LAYOUT:
            raise SyncNetWeightsError(f"{key} = {str(path)!r} is not a {LAYOUT} folder")
        try:
            model = cls(SyncNetConfig(**saved))
        except TypeError as exc:
            raise SyncNetWeightsError(f"{key} = {str(path)!r}: config.json does not fit SyncNetConfig ({exc})") from None
        load_matching(model, load_file(str(path / WEIGHTS_NAME)), f"{key} = {str(path)!r}")
        return model.to(device).eval()


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Load a state dict whose layout must match the model's exactly; otherwise say what differs."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape differs", wrong)):
            if keys:
                shown = ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
                parts.append(f"{label}: {shown}")
        raise SyncNetWeightsError(f"{where}: the weights do not match the {getattr(model, 'layout', type(model).__name__)} "
                                  f"layout ({'; '.join(parts)})")
    model.load_state_dict(state)
