"""Held-out evaluation of the two `flashlips-refine` stages, each beside the baselines it must beat.

Editor stage: on held-out pairs (by video), both directions, the mouth-region L1 (in [-1, 1]
units) and PSNR (dB, on [0, 1]) of the decoded edit against the output frame, beside returning the
input unchanged (`input`: for mod -> src, the synthetic frame as it came, X-Dub's baseline) and
the VAE's own reconstruction of the output frame (`vae`: the ceiling of any editor in its latent
space). The mouth region is both sides' lip masks joined (factory/models/pair_editor_loss.py).
Names: `mouth_l1_edit` (mod -> src), `mouth_l1_edit_src_to_mod`, and so on. `swap_vs_real`: the
mod -> src edit driven by another held-out segment's real lips, scored against this segment's
real frame: above `edit` when the lips follow the pose they are given. With a scorer
(factory/trainers/dubber_metrics.py), the mod -> src edit and the synthetic input, as videos, get the
measurement metrics against the real frames and audio: `sync_c_edit` (beside `sync_c_input` and
`sync_c_real`), `sync_d_*`, `csim_*`, `lmd_*` and full-frame `psnr_*`.

Lip-flow stage: mean squared error of the predicted lip poses against the real ones, in normalised
pose units (per-dimension z-scores: predicting the training mean scores about 1), for poses
sampled with `sample_steps` Euler steps (`sample`), the one-step estimate of the conditional mean
(`mean_estimate`: eps + v(eps, 0), which the MSE favours), the mean pose (`mean_pose`), the mean
of the K reference poses (`reference`), and a sample driven by another segment's audio
(`other_audio`: above `sample` when the poses follow the audio). With a scorer and the dubber the run
exports, each held-out synthetic segment is dubbed to its real audio and measured against the real
frames: `sync_c_dub` beside `sync_c_input` (the synthetic lips, which say other words) and
`sync_c_real`, `csim_dub`, `lmd_dub`, `psnr_dub`.
"""

from __future__ import annotations

import math

import torch

from factory.models.editor_losses import frames_of
from factory.trainers.pair_data import PairDataset, pair_loader


def _psnr(squared_error: float, weight: float) -> float:
    mse01 = squared_error / max(weight, 1e-12) / 4  # [-1, 1] -> [0, 1]
    return 10 * math.log10(1 / max(mse01, 1e-10))


@torch.no_grad()
def evaluate_editor(module, dataset: PairDataset, segments: int, scaling_factor: float | None = None,
                    scorer=None) -> dict[str, float]:
    from factory.models.latent_editor import decode_latents
    from factory.models.pair_editor_loss import DIRECTIONS, both_directions, edit_latents

    sums: dict[str, float] = {}
    seen = 0
    for batch in pair_loader(dataset):
        if seen >= segments:
            break
        b = len(batch["key"])
        examples = both_directions(batch)
        run = edit_latents(examples, module.vae, module.editor, module.lip_pose, scaling_factor)
        x_in, x_out = run["x_in"], run["x_out"]
        renders = {"edit": decode_latents(module.vae, run["z_hat"], scaling_factor).float().clamp(-1, 1),
                   "input": x_in,
                   "vae": decode_latents(module.vae, run["z_out"], scaling_factor).float().clamp(-1, 1)}
        mouth = frames_of(examples["mouth"]).to(x_out.device)
        half = len(x_out) // 2  # the first B * T frames are src -> mod, the rest mod -> src
        if b > 1:  # mod -> src driven by another segment's real lips: scored against this one's
            swapped = {"input": batch["synthetic"], "output": batch["target"].roll(1, 0),
                       "driver_landmarks": batch["mouth_landmarks"].roll(1, 0), "references": batch["references"]}
            z_swap = edit_latents(swapped, module.vae, module.editor, module.lip_pose, scaling_factor)["z_hat"]
            render = decode_latents(module.vae, z_swap, scaling_factor).float().clamp(-1, 1)
            m = mouth[half:]
            diff = (render - x_out[half:]) * m
            sums["swap/weight"] = sums.get("swap/weight", 0.0) + float(m.sum())
            sums["swap/l1"] = sums.get("swap/l1", 0.0) + float(diff.abs().sum() / 3)
        if scorer is not None:  # mod -> src, as videos: the edit and the synthetic input against the real side
            t = batch["target"].shape[2]
            scorer.add({"edit": videos_of(renders["edit"][half:], b, t), "input": batch["synthetic"]},
                       batch["target"], batch["audio"])
        for d, part in zip(DIRECTIONS, (slice(0, half), slice(half, None))):
            m = mouth[part]
            sums[f"{d}/weight"] = sums.get(f"{d}/weight", 0.0) + float(m.sum())
            for name, render in renders.items():
                diff = (render[part] - x_out[part]) * m
                sums[f"{d}/{name}/l1"] = sums.get(f"{d}/{name}/l1", 0.0) + float(diff.abs().sum() / 3)
                sums[f"{d}/{name}/se"] = sums.get(f"{d}/{name}/se", 0.0) + float((diff ** 2).sum() / 3)
        seen += b
    out = {}
    for d in DIRECTIONS:
        weight = sums.get(f"{d}/weight", 0.0)
        if not weight:
            continue
        suffix = "" if d == "mod_to_src" else f"_{d}"
        for name in ("edit", "input", "vae"):
            out[f"mouth_l1_{name}{suffix}"] = sums[f"{d}/{name}/l1"] / weight
            out[f"mouth_psnr_{name}{suffix}"] = _psnr(sums[f"{d}/{name}/se"], weight)
    if sums.get("swap/weight"):
        out["mouth_l1_swap_vs_real"] = sums["swap/l1"] / sums["swap/weight"]
    if scorer is not None:
        out.update(scorer.result())
    return out


def videos_of(frames: torch.Tensor, b: int, t: int) -> torch.Tensor:
    """(B*T, C, S, S) frames of consecutive segments -> (B, C, T, S, S): frames_of undone."""
    return frames.unflatten(0, (b, t)).transpose(1, 2)


@torch.no_grad()
def evaluate_lip_flow(module, dataset: PairDataset, segments: int, steps: int, seed: int, dubber=None,
                      scorer=None) -> dict[str, float]:
    flow = module.flow
    device = next(flow.parameters()).device
    generator = torch.Generator(device="cpu").manual_seed(seed)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    seen = 0
    for batch in pair_loader(dataset):
        if seen >= segments:
            break
        poses, audio, references = module.inputs(batch)
        z = flow.normalise(poses)
        refs = flow.normalise(references)
        noise = torch.randn(z.shape, generator=generator).to(device)
        t0 = torch.zeros(len(z), device=device)
        predictions = {
            "sample": flow.normalise(flow.sample(audio, references, steps, noise=noise)),
            "mean_estimate": noise + flow(noise, t0, audio, refs).float(),
            "mean_pose": torch.zeros_like(z),
            "reference": refs.mean(dim=1, keepdim=True).expand_as(z),
        }
        if len(z) > 1:  # the same noise and references, another segment's audio
            predictions["other_audio"] = flow.normalise(flow.sample(audio.roll(1, dims=0), references, steps,
                                                                    noise=noise))
        for name, pred in predictions.items():
            sums[name] = sums.get(name, 0.0) + float(((pred - z) ** 2).sum())
            counts[name] = counts.get(name, 0) + z.numel()
        if dubber is not None and scorer is not None:
            scorer.add({"dub": dub_batch(dubber, batch), "input": batch["synthetic"]}, batch["target"], batch["audio"])
        seen += len(z)
    out = {f"pose_mse_{name}": value / counts[name] for name, value in sums.items()}
    if scorer is not None:
        out.update(scorer.result())
    return out


def dub_batch(dubber, batch: dict) -> torch.Tensor:
    """The synthetic segments dubbed to the real audio, as `factory dub` would: (B, 3, T, S, S) in [-1, 1]."""
    from factory.trainers.dubber_metrics import to_uint8

    side = batch["synthetic"].shape[-1]
    out = []
    for video, landmarks, audio in zip(batch["synthetic"], batch["syn_mouth_landmarks"], batch["audio"]):
        frames = dubber.dub_segment(to_uint8(video), landmarks.cpu().numpy() * side, audio.cpu().numpy())
        out.append(torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1)
    return torch.stack(out)
