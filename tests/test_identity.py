"""Identity (CSIM): real dlib weights on real photos; the ArcFace path on a tiny exported ONNX."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from factory.config import ConfigError
from factory.payload import PairMedia
from filters.identity import IdentityConfig
from factory.faces.align import frame_to_crop, warp_crop
from factory.faces.embedders import ArcFaceEmbedder, DlibEmbedder, template_keypoints
from factory.faces.landmarks import FaceLandmarker
from factory.records import Record
from filters.identity import IdentityFilter, identity_thresholds


def aligned(rgb: np.ndarray, size: int = 256) -> np.ndarray:
    with FaceLandmarker(static=True) as lm:
        face = lm.detect(rgb)[0]
    return warp_crop(rgb, frame_to_crop(face, size), size)


@pytest.fixture(scope="module")
def faces():
    import insightface
    from skimage import data

    hanks = cv2.imread(str(Path(insightface.__file__).parent / "data/images/Tom_Hanks_54745.png"))[..., ::-1]
    return aligned(data.astronaut()), aligned(np.ascontiguousarray(hanks))


def clip(face: np.ndarray, n: int = 4, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(-6, 7, (n, *face.shape))
    return np.clip(face[None].astype(int) + noise, 0, 255).astype(np.uint8)


def pair(real: np.ndarray, syn: np.ndarray) -> Record:
    return Record("p", "pair", media=PairMedia(real_frames=real, syn_frames=syn))


def test_dlib_csim_keeps_the_same_face_and_rejects_another(faces):
    astronaut, hanks = faces
    stage = IdentityFilter(IdentityConfig(frames=3))
    same = pair(clip(astronaut), clip(astronaut, seed=1))
    other = pair(clip(astronaut), clip(hanks))
    with_lips = astronaut.copy()
    with_lips[170:210, 100:160] = with_lips[170:210, 100:160] // 2  # a darker mouth region only
    lips = pair(clip(astronaut), clip(with_lips))
    same, other, lips = stage([same, other, lips])
    assert not same.rejected and same.meta["scores"]["csim"] > 0.99
    assert not lips.rejected and lips.meta["scores"]["csim"] >= 0.96
    assert other.rejected == "csim_below_0.96" and other.meta["scores"]["csim"] < 0.9
    assert stage.stats == {"passed": 2, "dropped_csim_below_0.96": 1}


def test_soft_filter_keeps_the_pair_with_its_reason(faces):
    astronaut, hanks = faces
    stage = IdentityFilter(IdentityConfig(frames=2), soft=True)
    (record,) = stage([pair(clip(astronaut, 2), clip(hanks, 2))])
    assert not record.rejected and record.filtered == "csim_below_0.96"
    assert record.meta["filtered_by"] == "identity" and record.media.syn_frames is not None


def test_dlib_embeddings_are_unit_and_deterministic(faces):
    emb = DlibEmbedder()
    a, b = emb.embed(clip(faces[0], 2)), emb.embed(clip(faces[0], 2))
    assert a.shape == (2, 128) and np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert np.array_equal(a, b)


def test_thresholds_default_per_backend_and_override():
    assert identity_thresholds(IdentityConfig()) == {"csim": (">=", 0.96)}
    assert identity_thresholds(IdentityConfig(backend="arcface")) == {"csim": (">=", 0.85)}
    assert identity_thresholds(IdentityConfig(min_csim=0.5)) == {"csim": (">=", 0.5)}
    with pytest.raises(ConfigError, match="filters.identity.backend"):
        identity_thresholds(IdentityConfig(backend="facenet"))


def test_missing_arcface_weights_name_the_config_key(tmp_path):
    from pipelines.model_paths import check_model_paths
    from pipelines.settings import load_factory_config

    with pytest.raises(ConfigError, match="filters.identity.arcface_path = None"):
        check_model_paths(load_factory_config("configs/demo.yaml", ["filters.identity.backend=arcface"]))
    with pytest.raises(FileNotFoundError, match="filters.identity.arcface_path"):
        ArcFaceEmbedder(str(tmp_path / "w600k_r50.onnx"))


class TinyArcFace(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 7, stride=8), torch.nn.ReLU(), torch.nn.Flatten(),
                                       torch.nn.Linear(8 * 14 * 14, 64))

    def forward(self, x):
        return self.net(x)


@pytest.fixture(scope="module")
def tiny_arcface(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("arcface") / "tiny_arcface.onnx"
    torch.onnx.export(TinyArcFace().eval(), torch.zeros(1, 3, 112, 112), str(path), input_names=["input.1"],
                      output_names=["embedding"], dynamic_axes={"input.1": {0: "n"}, "embedding": {0: "n"}},
                      dynamo=False)
    return path


def test_arcface_path_through_insightface(faces, tiny_arcface):
    stage = IdentityFilter(IdentityConfig(backend="arcface", arcface_path=str(tiny_arcface), frames=3,
                                          min_csim=0.0))
    real = clip(faces[0], 3)
    (record,) = stage([pair(real, real.copy())])
    assert record.meta["scores"]["csim"] == pytest.approx(1.0, abs=1e-4)  # identical frames
    emb = stage.embedder.embed(np.concatenate([clip(faces[0], 2), clip(faces[1], 2)]))
    assert emb.shape == (4, 64) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert stage.embedder.model.input_size == (112, 112)


def test_template_keypoints_sit_on_the_face():
    kps = template_keypoints(256)
    left_eye, right_eye, nose, mouth_left, mouth_right = kps
    assert left_eye[0] < nose[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
