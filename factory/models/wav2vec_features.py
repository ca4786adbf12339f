"""Audio features from wav2vec 2.0: encoder states, one window per video frame (FlashLips Stage 2).

FlashLips predicts lip poses from wav2vec 2.0 features. Its convolutional front end has a 400-sample
receptive field and a 320-sample stride, so like Whisper's encoder (factory/models/audio_features.py)
it runs at 50 Hz: at 25 fps video frame i owns encoder frames 2i and 2i+1, and its window is the W
frames centred there, edge-padded. The windows, the sample rates and the per-clip numpy entry are
that module's (this class subclasses `AudioFeatures`); only the encoder differs.

Audio of A samples (A a multiple of 320) is padded by 40 samples on each side, which makes the
front end return exactly A / 320 frames, aligned with Whisper's. With `normalize` (what wav2vec 2.0
checkpoints' `do_normalize` asks for) each clip is scaled to zero mean and unit variance first.
The states come from `layer` (-1: the last; 0: the projected convolutional features).

Weights load from a local folder (`path`, local files only); `tiny` builds a small random encoder
for tests. Like `AudioFeatures`, an instance passes as a clip or pair dataset's `audio_encoder`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from factory.config import ConfigError
from factory.devices import pick_device
from factory.models.audio_features import SAMPLES_PER_STEP, AudioFeatures

PAD = 40  # samples on each side: (receptive field 400 - stride 320) / 2


# 1. settings --------------------------------------------------------------------------------

@dataclass
class Wav2VecFeatureConfig:
    path: str | None = None  # a local wav2vec 2.0 folder (config.json, weights; preprocessor_config.json optional)
    tiny: Any = None  # a dict of Wav2Vec2Config kwargs over TINY_WAV2VEC: a random tiny encoder (tests)
    window: int = 8  # encoder frames per video frame (8: 160 ms around the frame)
    layer: int = -1  # which hidden state: -1 the last, 0 the projected conv features
    normalize: bool | None = None  # zero-mean unit-variance audio; null: the folder's do_normalize (tiny: True)
    device: str | None = None  # null: cuda when present, else cpu
    seed: int = 0  # initialises the tiny encoder (so its features are reproducible)


TINY_WAV2VEC = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                "conv_dim": [16] * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4}


# 2. the encoder -----------------------------------------------------------------------------

class Wav2VecFeatures(AudioFeatures):
    """`features(audio)`: (B, A) float audio in [-1, 1] at 16 kHz, A = T * 640 -> (B, T, W, D)."""

    def __init__(self, config: Wav2VecFeatureConfig, key: str = "wav2vec"):
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        self.config = config
        self.device = torch.device(config.device or pick_device())
        if config.window < 1:
            raise ConfigError(f"config key '{key}.window' must be >= 1, not {config.window}")
        normalize = True
        if config.path is not None:
            folder = Path(config.path)
            if not (folder / "config.json").is_file():
                raise ConfigError(f"config key '{key}.path': {folder} is not a local wav2vec 2.0 folder (no "
                                  f"config.json); download facebook/wav2vec2-base-960h there, or set '{key}.tiny' "
                                  "for a random test encoder")
            try:
                model = Wav2Vec2Model.from_pretrained(folder, local_files_only=True)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"config key '{key}.path': cannot load wav2vec 2.0 weights from {folder}: {exc}") \
                    from None
            pre = folder / "preprocessor_config.json"
            if pre.is_file():
                normalize = bool(json.loads(pre.read_text()).get("do_normalize", True))
        elif config.tiny is not None:
            if not isinstance(config.tiny, dict):
                raise ConfigError(f"config key '{key}.tiny' must be a mapping of Wav2Vec2Config arguments "
                                  "({}: the defaults)")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed)
                model = Wav2Vec2Model(Wav2Vec2Config(**{**TINY_WAV2VEC, **config.tiny}))
        else:
            raise ConfigError(f"config key '{key}.path' is not set: give a local wav2vec 2.0 folder "
                              f"(or '{key}.tiny' for a random test encoder)")
        layers = model.config.num_hidden_layers
        if not -layers - 1 <= config.layer <= layers:
            raise ConfigError(f"config key '{key}.layer' must lie in [{-layers - 1}, {layers}], not {config.layer}")
        self.normalize = normalize if config.normalize is None else config.normalize
        self.encoder = model.to(self.device).eval().requires_grad_(False)

    @property
    def dim(self) -> int:
        return self.encoder.config.hidden_size

    @torch.no_grad()
    def encoder_states(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, A) audio -> (B, ceil(A / 320), D) states at 50 Hz (float32, on self.device)."""
        steps = -(-audio.shape[1] // SAMPLES_PER_STEP)
        x = audio.detach().float().to(self.device)
        if self.normalize:  # per clip, before the padding (as Wav2Vec2FeatureExtractor does)
            x = (x - x.mean(dim=1, keepdim=True)) / torch.sqrt(x.var(dim=1, keepdim=True) + 1e-7)
        x = torch.nn.functional.pad(x, (PAD, steps * SAMPLES_PER_STEP - audio.shape[1] + PAD))
        dtype = next(self.encoder.parameters()).dtype
        out = self.encoder(x.to(dtype), output_hidden_states=True)
        return out.hidden_states[self.config.layer].float()[:, :steps]
