"""The networks `factory eval` measures with, each from a local path. Nothing is downloaded:
where weights are missing the loader raises MissingWeights naming the config key to set, and
the metric is reported as skipped with that note (never a made-up number)."""

from __future__ import annotations

from pathlib import Path


class MissingWeights(Exception):
    """A metric cannot run here; str() says why and which key to set."""


def require_file(path: str | None, key: str, what: str, folder_ok: bool = False) -> Path:
    if not path:
        raise MissingWeights(f"{key} is not set: {what}")
    p = Path(path)
    if not (p.is_file() or (folder_ok and p.is_dir())):
        raise MissingWeights(f"{key}={path!r} is not a {'file or folder' if folder_ok else 'file'}: {what}")
    return p


def load_lpips(net: str, backbone_path: str | None, device: str = "cpu"):
    """lpips.LPIPS with its shipped linear heads and the backbone's ImageNet weights read from
    `backbone_path` (torchvision's state dict for alexnet / vgg16 / squeezenet1_1)."""
    import warnings

    import torch

    what = (f"LPIPS needs torchvision's ImageNet weights for its '{net}' backbone at a local path "
            "(lpips ships only its linear heads)")
    path = require_file(backbone_path, "eval.lpips_backbone_path", what)
    import lpips

    with warnings.catch_warnings():  # torchvision's deprecated `pretrained=` argument, used by lpips
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
    state = torch.load(path, map_location="cpu", weights_only=True)
    loaded = 0
    for slice_ in (m for name, m in model.net.named_children() if name.startswith("slice")):
        for index, layer in slice_.named_children():  # lpips keeps torchvision's layer indices
            for pname, param in layer.named_parameters(recurse=True):
                key = f"features.{index}.{pname}"
                if key not in state:
                    raise MissingWeights(f"eval.lpips_backbone_path={backbone_path!r} has no {key}: "
                                         f"not torchvision's {net} state dict")
                if state[key].shape != param.shape:
                    raise MissingWeights(f"eval.lpips_backbone_path={backbone_path!r}: {key} has shape "
                                         f"{tuple(state[key].shape)}, lpips' {net} wants {tuple(param.shape)}")
                param.data.copy_(state[key])
                loaded += 1
    if loaded == 0:
        raise MissingWeights(f"eval.lpips_backbone_path={backbone_path!r}: no backbone layer loaded")
    return model.eval().to(device)


def load_torchscript(path: str | None, key: str, what: str, device: str = "cpu"):
    import torch

    import warnings

    p = require_file(path, key, what)
    with warnings.catch_warnings():  # torch deprecates TorchScript, but the FID/FVD weights are in it
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(p), map_location=device).eval()


def load_embedder(backend: str, arcface_path: str | None, device: str = "cpu"):
    from factory.faces.embedders import ArcFaceEmbedder, DlibEmbedder

    if backend == "dlib":
        return DlibEmbedder()
    if backend == "arcface":
        require_file(arcface_path, "eval.arcface_path", "ArcFace needs a local ONNX (e.g. w600k_r50.onnx)")
        return ArcFaceEmbedder(arcface_path, device, config_key="eval.arcface_path")
    raise MissingWeights(f"eval.csim_backend={backend!r} is not one of dlib, arcface")


def load_sync(syncnet_path: str | None, device: str = "cpu"):
    """(sync_scores, model): factory.metrics.sync's scorer and a SyncNet from `syncnet_path`.
    Eval hands it full aligned face crops (eval.sync_crop) made by the same alignment as ingest's
    clips, so the net sees the geometry it was trained on; it takes the lower half itself."""
    from factory.metrics.sync import sync_scores
    from factory.models.syncnet_s import load_syncnet

    what = "Sync-C/Sync-D need SyncNet weights at a local path (see `factory train-syncnet`)"
    path = require_file(syncnet_path, "eval.syncnet_path", what, folder_ok=True)
    return sync_scores, load_syncnet(str(path), device=device, key="eval.syncnet_path")
