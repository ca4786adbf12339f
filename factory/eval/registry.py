"""The metrics `factory eval` knows: one entry each (name, the config key of the weights it
needs, and the class that computes it). The numbers come from factory/metrics; this file only
feeds them frames, faces and models.

A metric's `setup` loads its model or raises MissingWeights (the metric is then skipped with
that note); `score(item)` returns the item's numbers; `pooled()` returns set-level numbers
(FID, FVD: a distance between two distributions, not a mean over clips) or None.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from factory.eval.inputs import EvalItem
from factory.eval.models import (MissingWeights, load_embedder, load_lpips, load_sync,
                                 load_torchscript)
from factory.eval.settings import FID_KWARGS, FVD_KWARGS, EvalConfig
from factory.metrics.frames import evenly_spaced


@dataclass(frozen=True)
class MetricSpec:
    name: str
    weights_key: str | None  # None: needs no weights
    cls: type
    values: dict[str, str]  # each number it reports -> "higher" or "lower" is better (or "-")


class Metric:
    def __init__(self, cfg: EvalConfig):
        self.cfg = cfg

    def setup(self) -> None:
        pass

    def score(self, item: EvalItem) -> dict[str, float]:
        return {}

    def pooled(self) -> dict[str, float] | None:
        return None

    def sampled(self, n: int) -> np.ndarray:
        return evenly_spaced(n, self.cfg.frames_per_item)


class PSNR(Metric):
    def score(self, item):
        from factory.metrics.pixels import psnr

        return {"psnr": psnr(item.generated, item.reference)}


class SSIM(Metric):
    def score(self, item):
        from factory.metrics.pixels import ssim

        return {"ssim": ssim(item.generated, item.reference)}


class LPIPS(Metric):
    def setup(self):
        self.model = load_lpips(self.cfg.lpips_net, self.cfg.lpips_backbone_path, self.cfg.device)

    def score(self, item):
        from factory.metrics.perceptual import lpips_distance

        idx = self.sampled(len(item.generated))
        return {"lpips": lpips_distance(self.model, item.generated[idx], item.reference[idx],
                                        device=self.cfg.device)}


class LMD(Metric):
    def score(self, item):
        from factory.metrics.lmd import mouth_distance

        return {"lmd": mouth_distance(item.landmarks("generated"), item.landmarks("reference"))}


def aligned_crops(frames: np.ndarray, landmarks: np.ndarray, idx: np.ndarray, size: int) -> np.ndarray:
    from factory.faces.align import frame_to_crop, warp_crop

    return np.stack([warp_crop(frames[i], frame_to_crop(landmarks[i], size), size) for i in idx])


def face_frames(landmarks: np.ndarray) -> np.ndarray:
    return np.flatnonzero(~np.isnan(landmarks).any(axis=(1, 2)))


class CSIM(Metric):
    def setup(self):
        self.embedder = load_embedder(self.cfg.csim_backend, self.cfg.arcface_path, self.cfg.device)

    def score(self, item):
        from factory.metrics.csim import csim

        gen_lm, ref_lm = item.landmarks("generated"), item.landmarks("reference")
        both = np.intersect1d(face_frames(gen_lm), face_frames(ref_lm))
        if len(both) == 0:
            return {"csim": float("nan")}
        idx = both[self.sampled(len(both))]
        size = self.cfg.face_crop
        return {"csim": csim(self.embedder.embed(aligned_crops(item.reference, ref_lm, idx, size)),
                             self.embedder.embed(aligned_crops(item.generated, gen_lm, idx, size)))}


class Sync(Metric):
    def setup(self):
        self.sync_scores, self.model = load_sync(self.cfg.syncnet_path, self.cfg.device)

    def score(self, item):
        nan = float("nan")
        if item.audio is None:
            return {"sync_c": nan, "sync_d": nan, "sync_offset": nan}
        lm = item.landmarks("generated")
        faces = face_frames(lm)
        if len(faces) < len(lm):  # SyncNet needs every frame's face: hold the last one seen
            if len(faces) == 0:
                return {"sync_c": nan, "sync_d": nan, "sync_offset": nan}
            lm = lm[faces[np.maximum(np.searchsorted(faces, np.arange(len(lm)), side="right") - 1, 0)]]
        crops = aligned_crops(item.generated, lm, np.arange(len(lm)), self.cfg.sync_crop)
        audio = item.audio[: round(len(crops) * self.cfg.sample_rate / self.cfg.fps)]  # the frames' span
        s = self.sync_scores(self.model, crops, audio, sample_rate=self.cfg.sample_rate,
                             fps=self.cfg.fps, max_offset=self.cfg.sync_max_offset)
        return {"sync_c": float(s.confidence), "sync_d": float(s.min_dist), "sync_offset": float(s.offset)}


class Pooled(Metric):
    """Features of both sides collected item by item; one Fréchet distance at the end. A subclass
    names its feature network's config key and says which batches of an item it embeds."""

    key = ""
    weights_key = ""
    needs = ""  # what the network is, for the note when its weights are missing

    def __init__(self, cfg):
        super().__init__(cfg)
        self.features: dict[str, list[np.ndarray]] = {"generated": [], "reference": []}

    def setup(self):
        path = getattr(self.cfg, self.weights_key.split(".")[-1])
        self.model = load_torchscript(path, self.weights_key, self.needs, self.cfg.device)

    def batches(self, item: EvalItem, side: str):
        """The side's feature-network input batches for this item, or None when it has none."""
        raise NotImplementedError

    def extract_kwargs(self) -> dict:
        raise NotImplementedError

    def score(self, item):
        from factory.metrics.frechet import extract

        for side in ("generated", "reference"):
            batches = self.batches(item, side)
            if batches is not None:
                self.features[side].append(extract(self.model, batches, **self.extract_kwargs()))
        return {}

    def pooled(self):
        from factory.metrics.frechet import feature_distance

        gen, ref = (np.concatenate(self.features[s]) if self.features[s] else np.zeros((0, 0))
                    for s in ("generated", "reference"))
        n = {f"{self.key}_n_generated": float(len(gen)), f"{self.key}_n_reference": float(len(ref))}
        if len(gen) < 2 or len(ref) < 2:
            return {self.key: float("nan"), **n}
        return {self.key: feature_distance(gen, ref), **n}


class FID(Pooled):
    key, weights_key = "fid", "eval.fid_extractor_path"
    needs = "FID needs an Inception feature network as a local TorchScript (e.g. inception-2015-12-05.pt)"

    def batches(self, item, side):
        from factory.metrics.frechet import image_batches

        frames = getattr(item, side)[self.sampled(len(item.generated))]
        return image_batches(frames, self.cfg.fid_size, device=self.cfg.device)

    def extract_kwargs(self):
        return FID_KWARGS if self.cfg.fid_kwargs is None else self.cfg.fid_kwargs


class FVD(Pooled):
    key, weights_key = "fvd", "eval.fvd_extractor_path"
    needs = "FVD needs a video network (I3D) as a local TorchScript (e.g. i3d_torchscript.pt)"

    def batches(self, item, side):
        from factory.metrics.frechet import video_batches

        t = self.cfg.fvd_frames
        windows = len(item.generated) // t
        if windows == 0:
            if side == "generated":
                item.notes.append(f"shorter than eval.fvd_frames={t}: no FVD clip")
            return None
        clips = getattr(item, side)[: windows * t].reshape(windows, t, *item.generated.shape[1:])
        return video_batches(clips, self.cfg.fvd_size, device=self.cfg.device)

    def extract_kwargs(self):
        return FVD_KWARGS if self.cfg.fvd_kwargs is None else self.cfg.fvd_kwargs


METRICS = {s.name: s for s in [
    MetricSpec("psnr", None, PSNR, {"psnr": "higher"}),
    MetricSpec("ssim", None, SSIM, {"ssim": "higher"}),
    MetricSpec("lpips", "eval.lpips_backbone_path", LPIPS, {"lpips": "lower"}),
    MetricSpec("lmd", None, LMD, {"lmd": "lower"}),
    MetricSpec("csim", "eval.arcface_path", CSIM, {"csim": "higher"}),
    MetricSpec("sync", "eval.syncnet_path", Sync, {"sync_c": "higher", "sync_d": "lower", "sync_offset": "-"}),
    MetricSpec("fid", "eval.fid_extractor_path", FID, {"fid": "lower", "fid_n_generated": "-", "fid_n_reference": "-"}),
    MetricSpec("fvd", "eval.fvd_extractor_path", FVD, {"fvd": "lower", "fvd_n_generated": "-", "fvd_n_reference": "-"}),
]}


def build_metrics(cfg: EvalConfig) -> tuple[dict[str, Metric], dict[str, str]]:
    """The metrics asked for that can run here, and a note for each one skipped."""
    ready, skipped = {}, {}
    for name in cfg.metrics:
        metric = METRICS[name].cls(cfg)
        try:
            metric.setup()
        except MissingWeights as exc:
            skipped[name] = str(exc)
            continue
        ready[name] = metric
    return ready, skipped
