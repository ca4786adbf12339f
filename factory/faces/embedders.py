"""Face identity embeddings of template-aligned crops, for the identity (CSIM) filter.

Two backends behind one method, `embed(crops) -> (N, D)` unit vectors:
- `dlib`: dlib's ResNet face embedding (128-d), real weights shipped in `face-recognition-models`,
  so the factory has a working identity check on CPU with nothing to download.
- `arcface`: insightface's ArcFace on a user-supplied ONNX (e.g. `w600k_r50.onnx`), the identity
  model X-Dub reports; faster and sharper on a GPU.

Crops come from the ingest stage, already aligned to the canonical template, so both backends
place the face from the template instead of running a face detector again.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from factory.faces.align import template

# 5 points insightface aligns on: eye centres, nose tip, mouth corners (MediaPipe indices)
LEFT_EYE = [33, 133, 159, 145]
RIGHT_EYE = [362, 263, 386, 374]
NOSE_TIP, MOUTH_LEFT, MOUTH_RIGHT = 1, 61, 291


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)


def template_keypoints(crop_size: int) -> np.ndarray:
    """(5, 2) insightface-order keypoints of the canonical face at this crop size."""
    t = template(crop_size)
    return np.stack([t[LEFT_EYE].mean(0), t[RIGHT_EYE].mean(0), t[NOSE_TIP], t[MOUTH_LEFT],
                     t[MOUTH_RIGHT]]).astype(np.float32)


class DlibEmbedder:
    name = "dlib"

    def __init__(self) -> None:
        import dlib

        with warnings.catch_warnings():  # the package still imports pkg_resources
            warnings.simplefilter("ignore")
            import face_recognition_models as models
        self._dlib = dlib
        self.shapes = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
        self.net = dlib.face_recognition_model_v1(models.face_recognition_model_location())

    def embed(self, crops: np.ndarray) -> np.ndarray:
        size = crops.shape[1]
        t = template(size)
        (x0, y0), (x1, y1) = t.min(0), t.max(0)
        box = self._dlib.rectangle(int(x0), int(y0), int(x1), int(y1))
        out = []
        for crop in crops:
            crop = np.ascontiguousarray(crop)
            out.append(np.array(self.net.compute_face_descriptor(crop, self.shapes(crop, box))))
        return unit_rows(np.stack(out))


class ArcFaceEmbedder:
    name = "arcface"

    def __init__(self, path: str | None, device: str = "cpu", config_key: str = "filters.identity.arcface_path"):
        if not path or not Path(path).is_file():
            raise FileNotFoundError(
                f"{config_key} is {path!r}: point it at a local ArcFace ONNX such as w600k_r50.onnx "
                "(insightface's buffalo_l pack), or use filters.identity.backend=dlib")
        from insightface.model_zoo import get_model

        providers = (["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda"
                     else ["CPUExecutionProvider"])
        self.model = get_model(str(path), providers=providers)
        if self.model is None or not hasattr(self.model, "get_feat"):
            raise ValueError(f"{config_key}={path!r} is not an ArcFace recognition model (112x112 input)")

    def embed(self, crops: np.ndarray) -> np.ndarray:
        from insightface.utils.face_align import norm_crop

        kps = template_keypoints(crops.shape[1])
        faces = [norm_crop(np.ascontiguousarray(c[..., ::-1]), kps, self.model.input_size[0]) for c in crops]
        return unit_rows(self.model.get_feat(faces))  # insightface wants BGR; norm_crop kept it


def build_embedder(backend: str, arcface_path: str | None = None, device: str = "cpu"):
    if backend == "dlib":
        return DlibEmbedder()
    if backend == "arcface":
        return ArcFaceEmbedder(arcface_path, device)
    raise ValueError(f"unknown filters.identity.backend {backend!r} (known: dlib, arcface)")
