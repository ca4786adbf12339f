"""The classic SyncNet evaluation model: syncnet_python's `S` (Chung & Zisserman 2016), the
network behind the Sync-C / Sync-D numbers that LatentSync, Wav2Lip and X-Dub report.

The module names and shapes are syncnet_python's (`netcnnaud`, `netfcaud`, `netcnnlip`,
`netfclip`), so its published `syncnet_v2.model` state dict loads as it is from a local path;
anything else fails naming the keys that differ. Inputs, as syncnet_python feeds them:
- video: 5 consecutive 224x224 face frames, BGR, raw 0-255 values, (B, 3, 5, 224, 224);
- audio: 13 MFCCs (python_speech_features defaults on int16-scaled samples, 100 steps a second),
  20 steps = the same 0.2 s, (B, 1, 13, 20); frame v's window starts at MFCC step 4v.
Our clips are aligned crops (not syncnet_python's S3FD boxes): they are resized to 224.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from factory.models.syncnet import SyncNetWeightsError, load_matching

LAYOUT = "syncnet_python_s"


# 1. MFCC as python_speech_features.mfcc(signal, 16000) computes it --------------------------------

def _hz2mel(hz):
    return 2595 * np.log10(1 + np.asarray(hz) / 700.0)


def _mel2hz(mel):
    return 700 * (10 ** (np.asarray(mel) / 2595.0) - 1)


def mfcc(signal: np.ndarray, sample_rate: int = 16000, winlen: float = 0.025, winstep: float = 0.01,
         numcep: int = 13, nfilt: int = 26, nfft: int = 512, preemph: float = 0.97, ceplifter: int = 22) -> np.ndarray:
    """(steps, 13) MFCCs, the first replaced by the log frame energy (appendEnergy=True)."""
    from scipy.fft import dct

    sig = np.asarray(signal, np.float64)
    sig = np.append(sig[0], sig[1:] - preemph * sig[:-1])
    frame_len, step = int(round(winlen * sample_rate)), int(round(winstep * sample_rate))
    n = 1 if len(sig) <= frame_len else 1 + int(np.ceil((len(sig) - frame_len) / step))
    padded = np.concatenate([sig, np.zeros(max(0, (n - 1) * step + frame_len - len(sig)))])
    idx = np.arange(frame_len)[None, :] + step * np.arange(n)[:, None]
    frames = padded[idx]  # rectangular window, as python_speech_features' default
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    energy = power.sum(1)
    energy[energy == 0] = np.finfo(float).eps
    bins = np.floor((nfft + 1) * _mel2hz(np.linspace(_hz2mel(0), _hz2mel(sample_rate / 2), nfilt + 2)) / sample_rate)
    fbank = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        a, b, c = int(bins[j]), int(bins[j + 1]), int(bins[j + 2])
        for i in range(a, b):
            fbank[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(b, c):
            fbank[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    feat = power @ fbank.T
    feat[feat == 0] = np.finfo(float).eps
    feat = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :numcep]
    feat *= 1 + (ceplifter / 2.0) * np.sin(np.pi * np.arange(numcep) / ceplifter)
    feat[:, 0] = np.log(energy)
    return feat.astype(np.float32)


# 2. the network (syncnet_python SyncNetModel.S, module for module) ----------------------------------

def _bn_relu(layer: nn.Module, channels: int, dims: int) -> list[nn.Module]:
    return [layer, (nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d)(channels), nn.ReLU(inplace=True)]


class SyncNetS(nn.Module):
    layout = LAYOUT
    window = 5  # video frames per window
    image_size = 224

    def __init__(self, num_layers_in_fc_layers: int = 1024):
        super().__init__()
        self.netcnnaud = nn.Sequential(
            *_bn_relu(nn.Conv2d(1, 64, 3, 1, 1), 64, 2), nn.MaxPool2d(1, 1),
            *_bn_relu(nn.Conv2d(64, 192, 3, 1, 1), 192, 2), nn.MaxPool2d(3, (1, 2)),
            *_bn_relu(nn.Conv2d(192, 384, 3, padding=1), 384, 2),
            *_bn_relu(nn.Conv2d(384, 256, 3, padding=1), 256, 2),
            *_bn_relu(nn.Conv2d(256, 256, 3, padding=1), 256, 2), nn.MaxPool2d(3, 2),
            *_bn_relu(nn.Conv2d(256, 512, (5, 4), padding=0), 512, 2),
        )
        self.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
                                      nn.Linear(512, num_layers_in_fc_layers))
        self.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
                                      nn.Linear(512, num_layers_in_fc_layers))
        self.netcnnlip = nn.Sequential(
            *_bn_relu(nn.Conv3d(3, 96, (5, 7, 7), (1, 2, 2), 0), 96, 3), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_bn_relu(nn.Conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), 256, 3),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            *_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, 3),
            *_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, 3),
            *_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, 3), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_bn_relu(nn.Conv3d(256, 512, (1, 6, 6), padding=0), 512, 3),
        )

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        return self.netfcaud(self.netcnnaud(x).flatten(1))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        return self.netfclip(self.netcnnlip(x).flatten(1))

    # -- windows of a clip, for sync_scores ------------------------------------------------------

    @torch.no_grad()
    def video_features(self, frames: np.ndarray, batch: int = 20) -> torch.Tensor:
        import cv2

        bgr = np.stack([cv2.resize(f, (224, 224), interpolation=cv2.INTER_AREA if f.shape[0] > 224 else cv2.INTER_LINEAR)
                        for f in frames])[..., ::-1]
        video = torch.from_numpy(np.ascontiguousarray(bgr)).permute(3, 0, 1, 2).float()  # (3, T, 224, 224)
        n = len(frames) - self.window + 1
        out = []
        for i in range(0, max(n, 0), batch):
            x = torch.stack([video[:, v:v + self.window] for v in range(i, min(n, i + batch))])
            out.append(self.forward_lip(x.to(self.device)).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.netfclip[-1].out_features)

    @torch.no_grad()
    def audio_features(self, audio: np.ndarray, sample_rate: int, count: int, batch: int = 20) -> torch.Tensor:
        wav = np.asarray(audio)
        wav = wav.astype(np.float64) if wav.dtype == np.int16 else np.asarray(wav, np.float64) * 32768.0
        cc = torch.from_numpy(mfcc(wav, sample_rate).T.copy())  # (13, steps)
        need = 4 * (count - 1) + 20
        if cc.shape[1] < need:
            cc = torch.nn.functional.pad(cc, (0, need - cc.shape[1]))
        out = []
        for i in range(0, count, batch):
            x = torch.stack([cc[None, :, 4 * v:4 * v + 20] for v in range(i, min(count, i + batch))])
            out.append(self.forward_aud(x.to(self.device)).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.netfcaud[-1].out_features)

    @classmethod
    def from_file(cls, path: str | Path, device: str | torch.device = "cpu", key: str = "syncnet_path") -> "SyncNetS":
        path = Path(path)
        if not path.is_file():
            raise SyncNetWeightsError(f"{key} = {str(path)!r} is not a file (syncnet_python's syncnet_v2.model)")
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise SyncNetWeightsError(f"{key} = {str(path)!r} is not a torch state dict ({type(exc).__name__}: {exc})") from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        if not isinstance(state, dict):
            raise SyncNetWeightsError(f"{key} = {str(path)!r} holds a {type(state).__name__}, not a state dict")
        state = {k.removeprefix("module.").removeprefix("__S__."): v for k, v in state.items()}
        model = cls()
        load_matching(model, state, f"{key} = {str(path)!r}")
        return model.to(device).eval()


def load_syncnet(path: str | Path, device: str | torch.device | None = None, key: str = "syncnet_path"):
    """A SyncNet from a local path: a `save_pretrained` folder (the StableSyncNet design, as
    `factory train-syncnet` writes) or a syncnet_python S-model state dict file. Nothing is
    downloaded; a missing path or other layout fails naming `key`."""
    from factory.devices import pick_device
    from factory.models.syncnet import SyncNet

    device = device or pick_device()
    if path is None or str(path) == "":
        raise SyncNetWeightsError(f"{key} is not set: give a SyncNet folder (`factory train-syncnet`) "
                                  "or syncnet_python's syncnet_v2.model")
    p = Path(path)
    if p.is_dir():
        return SyncNet.from_pretrained(p, device, key)
    if p.is_file():
        return SyncNetS.from_file(p, device, key)
    raise SyncNetWeightsError(f"{key} = {str(path)!r} does not exist (nothing is downloaded: "
                              "give a local SyncNet folder or syncnet_v2.model file)")
