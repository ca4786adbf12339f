"""The SyncNet loss of X-Dub Stage II's lip phase: is the editor's single-step clean estimate in
sync with the driving audio?

Either SyncNet the project loads (factory/models/syncnet_s.py `load_syncnet`, local weights only):
- the StableSyncNet design (factory/models/syncnet.py, what `factory train-syncnet` writes): the
  lower half of the face over `frames` frames against the log-mel window of the same time;
  loss -log p(sync), LatentSync's;
- syncnet_python's S model (`syncnet_v2.model`): 5 frames at 224 px, BGR 0-255, against 13 MFCCs
  over the same 0.2 s; loss 1 - cos(lip, audio) (its embeddings are compared by distance).

One window per sample, inside the frames the editor generated (not the clean motion frames),
its start drawn from the caller's generator. Gradients reach the frames; the SyncNet is frozen
and the audio side needs none.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SAMPLES_PER_FRAME = 640  # 16 kHz at 25 fps


def window_starts(batch: int, frames: int, first: int, window: int, generator: torch.Generator | None) -> list[int]:
    """A window start per sample in [first, frames - window] (the generated frames)."""
    last = frames - window
    if last < first:
        raise ValueError(f"a SyncNet window of {window} frames does not fit in frames {first}..{frames - 1}")
    where = generator.device if generator is not None else "cpu"
    picks = torch.randint(first, last + 1, (batch,), generator=generator, device=where)
    return [int(p) for p in picks]


def _stable_inputs(syncnet: nn.Module, video: torch.Tensor, audio: np.ndarray, start: int):
    from factory.models.syncnet import log_mel, mel_window

    cfg = syncnet.config
    clip = video[:, start:start + cfg.frames]  # (3, F, S, S)
    size = cfg.image_size
    if clip.shape[-1] != size:
        clip = F.interpolate(clip.transpose(0, 1), size=(size, size), mode="bilinear", align_corners=False).transpose(0, 1)
    visual = clip[:, :, size // 2:].transpose(0, 1).flatten(0, 1)  # (3F, S/2, S): frames on the channel axis
    mel = torch.from_numpy(mel_window(log_mel(audio, cfg), start, cfg))[None]
    return visual, mel


def _classic_inputs(syncnet: nn.Module, video: torch.Tensor, audio: np.ndarray, start: int):
    from factory.models.syncnet_s import mfcc

    clip = video[:, start:start + syncnet.window]
    clip = F.interpolate(clip.transpose(0, 1), size=(224, 224), mode="bilinear", align_corners=False).transpose(0, 1)
    bgr = (clip.flip(0) + 1) * 127.5  # syncnet_python feeds BGR 0-255
    cc = torch.from_numpy(mfcc(np.asarray(audio, np.float64) * 32768.0).T.copy())  # (13, steps)
    need = 4 * start + 20
    if cc.shape[1] < need:
        cc = F.pad(cc, (0, need - cc.shape[1]))
    return bgr, cc[None, :, 4 * start:4 * start + 20]


def sync_loss(syncnet: nn.Module, video: torch.Tensor, audio: torch.Tensor, starts: list[int]) -> torch.Tensor:
    """Per-sample SyncNet loss (B,). video (B, 3, T, S, S) in [-1, 1] (aligned face crops, with
    gradients); audio (B, T * 640) 16 kHz; starts: each sample's first window frame."""
    wav = audio.detach().float().cpu().numpy()
    stable = hasattr(syncnet, "embed_visual")
    make = _stable_inputs if stable else _classic_inputs
    pairs = [make(syncnet, v, a, s) for v, a, s in zip(video, wav, starts)]
    device = next(syncnet.parameters()).device
    visual = torch.stack([p[0] for p in pairs]).to(device)
    sound = torch.stack([p[1] for p in pairs]).to(device, visual.dtype)
    if stable:
        return -torch.log(syncnet(visual, sound).clamp_min(1e-6))
    lip, aud = syncnet.forward_lip(visual), syncnet.forward_aud(sound)
    return 1 - F.cosine_similarity(lip.float(), aud.float(), dim=1)
