"""Audio features for the learned generators: Whisper encoder states (or Whisper's log-mel
frames), one window per video frame.

X-Dub and LatentSync condition each video frame on a window of Whisper encoder frames around it.
The encoder runs at 50 Hz (a 10 ms mel hop, then a stride-2 convolution), so at 25 fps video frame
i owns encoder frames 2i and 2i+1; its window is the W frames centred there (W = 16 in X-Dub),
edge-padded (the first / last encoder frame repeats) where it runs past the audio.

`kind: mel` skips the encoder: the states are Whisper's own log-mel frames (the
WhisperFeatureExtractor's, 100 Hz), two per 50 Hz step side by side (2 x mel_bins wide), windowed
the same way; the DiT's audio attention projects them, as Wav2Lip-style models consume mels. It
needs no weights, and keeps what a random encoder blurs: on the demo corpus a ridge probe from
each frame's features to its mouth opening, fitted on two videos and tested on the third, explains
R^2 = 0.88-0.93 of the opening with mel windows and 0.53-0.82 with the tiny random encoder's
states (0.82 only with almost no regularisation). "whisper" (the default) is the real recipe:
pretrained Whisper states carry far more than loudness.

Read top to bottom: 1. settings, 2. windows (a pure function of a feature tensor), 3. the encoder
(local Whisper weights, a tiny random one for tests, or none: log-mel).

Whisper's encoder takes exactly `max_source_positions * 2` mel frames (30 s for real weights):
audio is cut into chunks of that length, each padded with silence, encoded, and the chunks'
states are joined and trimmed to the audio's own length.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from factory.config import ConfigError
from factory.devices import pick_device

SAMPLE_RATE = 16000
FPS = 25
ENCODER_HZ = 50  # Whisper: 100 Hz mel, stride-2 conv
STEPS_PER_FRAME = ENCODER_HZ // FPS  # 2
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
SAMPLES_PER_STEP = SAMPLE_RATE // ENCODER_HZ  # 320
MEL_CHUNK_SECONDS = 2  # kind mel: audio is cut into 2 s pieces (no encoder limit; a short pad per clip)


# 1. settings --------------------------------------------------------------------------------

@dataclass
class AudioFeatureConfig:
    kind: str = "whisper"  # "whisper": encoder states; "mel": Whisper's log-mel frames (no encoder, no weights)
    mel_bins: int = 80  # kind mel: mel bands (Whisper's own extractor)
    path: str | None = None  # a local Whisper folder (config.json, weights, preprocessor_config.json);
    # kind mel: optional, a folder with the extractor's preprocessor_config.json
    tiny: Any = None  # a dict of WhisperConfig kwargs over TINY_WHISPER: a random tiny encoder (tests, benchmarks)
    # (typed Any: the config loader refuses free keys inside a typed dict)
    window: int = 16  # encoder frames per video frame (X-Dub: 16)
    device: str | None = None  # null: cuda when present, else cpu
    seed: int = 0  # initialises the tiny encoder (so its features are reproducible)


TINY_WHISPER = {"d_model": 64, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 128,
                "decoder_layers": 1, "decoder_attention_heads": 2, "decoder_ffn_dim": 128,
                "num_mel_bins": 80, "max_source_positions": 100}  # 2 s chunks: cheap on CPU


# 2. windows ---------------------------------------------------------------------------------

def window_indices(frames: int, steps: int, window: int) -> torch.Tensor:
    """(frames, window) encoder-frame indices: row i is centred on video frame i's two encoder
    frames (2i, 2i+1 sit at the middle, positions (W-1)//2 and (W-1)//2 + 1 for even W), clamped
    into [0, steps) so the edges repeat the first / last frame."""
    start = torch.arange(frames) * STEPS_PER_FRAME - (window - 1) // 2
    return (start[:, None] + torch.arange(window)[None, :]).clamp(0, steps - 1)


def frame_windows(features: torch.Tensor, frames: int, window: int) -> torch.Tensor:
    """(B, L, D) encoder states at 50 Hz -> (B, frames, window, D) per-video-frame windows."""
    idx = window_indices(frames, features.shape[1], window).to(features.device)
    return features[:, idx]


# 3. the encoder -----------------------------------------------------------------------------

class AudioFeatures:
    """`features(audio)`: (B, A) float audio in [-1, 1] at 16 kHz, A = T * 640 -> (B, T, W, D).

    Loads a Whisper encoder from `config.path` (local files only) or builds a tiny random one
    from `config.tiny`. Runs under `torch.no_grad` on `config.device` (CUDA when present).
    """

    def __init__(self, config: AudioFeatureConfig, key: str = "audio_features"):
        from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

        self.config = config
        self.device = torch.device(config.device or pick_device())
        if config.window < 1:
            raise ConfigError(f"config key '{key}.window' must be >= 1, not {config.window}")
        if config.kind not in ("whisper", "mel"):
            raise ConfigError(f"config key '{key}.kind' must be 'whisper' or 'mel', not {config.kind!r}")
        if config.kind == "mel":
            if config.mel_bins < 1:
                raise ConfigError(f"config key '{key}.mel_bins' must be >= 1, not {config.mel_bins}")
            self.encoder = None
            if config.path is not None:  # a saved extractor (a generator folder's audio/)
                folder = Path(config.path)
                if not (folder / "preprocessor_config.json").is_file():
                    raise ConfigError(f"config key '{key}.path': {folder} holds no preprocessor_config.json "
                                      "(kind mel needs only the extractor's settings; or leave the path unset)")
                self.extractor = WhisperFeatureExtractor.from_pretrained(folder, local_files_only=True)
            else:
                self.extractor = WhisperFeatureExtractor(feature_size=config.mel_bins, chunk_length=MEL_CHUNK_SECONDS)
            self.chunk_samples = self.extractor.n_samples
            self.chunk_steps = self.chunk_samples // SAMPLES_PER_STEP
            return
        if config.path is not None:
            folder = Path(config.path)
            if not (folder / "config.json").is_file():
                raise ConfigError(f"config key '{key}.path': {folder} is not a local Whisper folder (no config.json); "
                                  f"download openai/whisper-* there, or set '{key}.tiny' for a random test encoder")
            try:
                model = WhisperModel.from_pretrained(folder, local_files_only=True)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"config key '{key}.path': cannot load Whisper weights from {folder}: {exc}") from None
            mel = model.config.num_mel_bins
            if (folder / "preprocessor_config.json").is_file():
                self.extractor = WhisperFeatureExtractor.from_pretrained(folder, local_files_only=True)
            else:
                self.extractor = WhisperFeatureExtractor(feature_size=mel)
        elif config.tiny is not None:
            if not isinstance(config.tiny, dict):
                raise ConfigError(f"config key '{key}.tiny' must be a mapping of WhisperConfig arguments ({{}}: the defaults)")
            wc = WhisperConfig(**{**TINY_WHISPER, **config.tiny})
            if (wc.max_source_positions * 2 * 160) % SAMPLE_RATE:
                raise ConfigError(f"config key '{key}.tiny.max_source_positions' must be a multiple of 50 (whole seconds)")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed)
                model = WhisperModel(wc)
            self.extractor = WhisperFeatureExtractor(feature_size=wc.num_mel_bins,
                                                     chunk_length=wc.max_source_positions * 2 * 160 // SAMPLE_RATE)
        else:
            raise ConfigError(f"config key '{key}.path' is not set: give a local Whisper folder "
                              f"(or '{key}.tiny' for a random test encoder)")
        self.encoder = model.get_encoder().to(self.device).eval()
        del model  # the decoder is not needed
        self.chunk_samples = self.encoder.config.max_source_positions * STEPS_PER_FRAME * 160
        self.chunk_steps = self.encoder.config.max_source_positions

    @property
    def dim(self) -> int:
        if self.encoder is None:
            return 2 * self.extractor.feature_size  # two 100 Hz mel frames per 50 Hz step
        return self.encoder.config.d_model

    @property
    def window(self) -> int:
        return self.config.window

    @torch.no_grad()
    def encoder_states(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, A) audio -> (B, ceil(A / 320), D) encoder states at 50 Hz (float32, on self.device);
        kind mel: the log-mel frames, pairs of 100 Hz frames side by side."""
        b, a = audio.shape
        chunks = max(1, -(-a // self.chunk_samples))
        padded = torch.zeros(b, chunks * self.chunk_samples, dtype=torch.float32)
        padded[:, :a] = audio.detach().float().cpu()
        pieces = list(padded.reshape(b * chunks, self.chunk_samples).numpy())
        mel = self.extractor(pieces, sampling_rate=SAMPLE_RATE, return_tensors="pt",
                             device=str(self.device) if self.device.type == "cuda" else "cpu").input_features
        if self.encoder is None:
            states = mel.to(self.device).float().transpose(1, 2).reshape(b * chunks, self.chunk_steps, -1)
        else:
            dtype = next(self.encoder.parameters()).dtype
            states = self.encoder(mel.to(self.device, dtype)).last_hidden_state.float()
        states = states.reshape(b, chunks * self.chunk_steps, -1)
        return states[:, :-(-a // SAMPLES_PER_STEP)]

    @torch.no_grad()
    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, A) audio, A = T * 640 -> (B, T, window, D) float32 on self.device."""
        frames = audio.shape[1] // SAMPLES_PER_FRAME
        return frame_windows(self.encoder_states(audio), frames, self.config.window)

    def features_np(self, audio: np.ndarray) -> np.ndarray:
        """One clip's (A,) float or int16 audio -> (T, W, D) float32 (CPU, for data loaders)."""
        if audio.dtype == np.int16:
            audio = audio.astype(np.float32) / 32768.0
        return self(torch.from_numpy(np.asarray(audio, np.float32))[None])[0].cpu().numpy()


def save_whisper_encoder(audio: AudioFeatures, folder: Path) -> None:
    """An AudioFeatures' encoder as a Whisper folder AudioFeatureConfig(path=...) loads: the
    encoder weights inside a WhisperModel (its decoder as configured, unused) + the extractor."""
    from transformers import WhisperModel

    with torch.random.fork_rng(devices=[]):
        model = WhisperModel(audio.encoder.config)
    model.encoder.load_state_dict(audio.encoder.state_dict())
    model.save_pretrained(folder)
    audio.extractor.save_pretrained(folder)


def save_audio_entry(audio: "AudioFeatures | AudioFeatureConfig", folder: Path, subdir: str = "audio") -> dict[str, Any]:
    """The `audio` entry of a model folder's config.json: log-mel keeps only the extractor's settings,
    a local Whisper is recorded by its path, a tiny/random encoder is saved into folder/subdir."""
    import dataclasses

    config = audio.config if isinstance(audio, AudioFeatures) else audio
    features = audio if isinstance(audio, AudioFeatures) else None
    if config.kind == "mel":  # no weights: the extractor's settings are the whole audio model
        (features or AudioFeatures(config)).extractor.save_pretrained(Path(folder) / subdir)
        entry = {"kind": "mel", "path": subdir}
    elif config.path is not None:
        entry = {"path": str(Path(config.path).resolve())}
    else:
        save_whisper_encoder(features or AudioFeatures(dataclasses.replace(config, device="cpu")), Path(folder) / subdir)
        entry = {"path": subdir}
    entry["window"] = config.window
    return entry


def audio_config_from_entry(entry: dict[str, Any], folder: str | Path) -> AudioFeatureConfig:
    """The AudioFeatureConfig a model folder's `audio` entry (save_audio_entry) stands for; a
    relative path is inside `folder`."""
    path = entry["path"]
    if not Path(path).is_absolute():
        path = str(Path(folder) / path)
    return AudioFeatureConfig(kind=entry.get("kind", "whisper"), path=path, window=entry["window"])
