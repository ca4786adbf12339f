"""The occlusion stage end to end: a tiny random Qwen2.5-VL (answers forced) boxes an occluder,
random-weight SAM 2 propagates it, the masks are stored beside the clip, and the generate stage
keeps the occluder's pixels real. Plus the whole pipeline with occlusion on, from config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from factory.clips import Clip, load_occlusion, occlusion_path, save_clip, save_occlusion
from factory.config import ConfigError
from factory.faces.align import frame_to_crop, warp_crop
from factory.faces.landmarks import FaceLandmarker
from factory.faces.masks import dilate
from factory.records import Record
from factory.stages.generate import GenerateConfig, GenerateStage
from factory.stages.occlusion import OcclusionConfig, OcclusionStage, masks_tag
from pipelines.model_paths import check_model_paths
from pipelines.settings import load_factory_config as load_config
from tests.cli import LOCAL, SMALL, run_factory
from tests.tiny_qwen import ForceText, tiny_qwen_path  # noqa: F401  (fixture)

T, S = 4, 256
HAND = '[{"bbox_2d": [37, 61, 74, 86], "label": "hand"}]'  # in the 112x112 frame the model sees


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A real clip and its alternative (the same face with a darker, wider mouth), on disk."""
    from skimage import data

    rgb = data.astronaut()
    with FaceLandmarker(static=True) as lm:
        crop = warp_crop(rgb, frame_to_crop(lm.detect(rgb)[0], S), S)
        landmarks = lm.detect(crop)[0][:, :2]
    rng = np.random.default_rng(0)
    real = np.clip(crop[None].astype(int) + rng.integers(-4, 5, (T, S, S, 3)), 0, 255).astype(np.uint8)
    alt = real.copy()
    alt[:, 165:205, 95:165] //= 3
    folder = tmp_path_factory.mktemp("clips")
    audio = np.zeros(T * 640, np.int16)
    lms = np.repeat(landmarks[None], T, 0).astype(np.float32)
    transforms = np.repeat(np.eye(2, 3, dtype=np.float32)[None], T, 0)
    save_clip(folder / "real.npz", Clip(real, lms, transforms, audio))
    save_clip(folder / "alt.npz", Clip(alt, lms, transforms, audio))
    return folder


def stage(tiny_qwen_path, force) -> OcclusionStage:
    cfg = OcclusionConfig(enabled=True, image_size=64)
    return OcclusionStage(cfg, tiny_qwen_path, "occlusion.vlm_path", max_pixels=112 * 112,
                          allow_random_weights=True, logits_processor=force)


def clip_record(folder) -> Record:
    return Record("real", "clip", meta={"clip_path": str(folder / "real.npz")})


def test_boxes_are_found_propagated_stored_and_reused(clips, tiny_qwen_path):  # noqa: F811
    s = stage(tiny_qwen_path, None)
    occlusion_path(clips / "real.npz", s.tag).unlink(missing_ok=True)
    s.setup()
    s.logits_processor = ForceText(s.vlm.processor.tokenizer, HAND)
    (record,) = s([clip_record(clips)])
    assert not record.rejected
    # asked about frames 0, 2 and 3 in one batch; boxes back in crop pixels (x 256/112), widened
    assert record.meta["occluders"] == [{"frame": f, "label": "hand", "box": [84, 139, 170, 197]} for f in (0, 2, 3)]
    assert s.logits_processor.batch_sizes == [3]
    assert record.meta["occlusion_masks"] == str(occlusion_path(clips / "real.npz", s.tag))  # travels in the record
    masks = load_occlusion(record.meta["occlusion_masks"])
    assert masks.shape == (T, S, S) and masks.dtype == bool
    asked = s.logits_processor.calls
    (again,) = s([clip_record(clips)])  # stored: the VLM is not asked again
    assert s.logits_processor.calls == asked and again.meta["occluders"] == record.meta["occluders"]
    other = stage(tiny_qwen_path, None)
    other.cfg.probe_frames = 2
    assert masks_tag(other.cfg, tiny_qwen_path) != s.tag  # other settings never reuse these masks


def test_a_nonsense_answer_twice_rejects_the_clip(clips, tiny_qwen_path):  # noqa: F811
    s = stage(tiny_qwen_path, None)
    occlusion_path(clips / "real.npz", s.tag).unlink(missing_ok=True)
    s.setup()
    s.logits_processor = ForceText(s.vlm.processor.tokenizer, "maybe a hand?")
    (record,) = s([clip_record(clips)])
    assert record.rejected == "occlusion_vlm_malformed" and s.logits_processor.batch_sizes == [3, 3]
    assert not occlusion_path(clips / "real.npz", s.tag).exists()


def test_generate_keeps_stored_occluders_real(clips):
    real_path, alt_path = str(clips / "real.npz"), str(clips / "alt.npz")
    occluder = np.zeros((T, S, S), bool)
    for t in range(T):  # a hand moving across the mouth
        occluder[t, 150:215, 60 + 15 * t:130 + 15 * t] = True
    masks_path = occlusion_path(real_path, "test")
    save_occlusion(masks_path, occluder)
    unmasked = Record("real", "pair", meta={"clip_path": real_path, "alt_clip_path": alt_path})
    pair = Record("real", "pair", meta={"clip_path": real_path, "alt_clip_path": alt_path,
                                        "occlusion_masks": str(masks_path)})
    (plain,) = GenerateStage(GenerateConfig())([unmasked])  # masks on disk but not in the record: unused
    assert plain.media.occlusion is None and not np.array_equal(plain.media.syn_frames[occluder],
                                                                  plain.media.real_frames[occluder])
    (out,) = GenerateStage(GenerateConfig())([pair])
    real, syn = out.media.real_frames, out.media.syn_frames
    assert np.array_equal(out.media.occlusion, occluder)  # the mask travels in the payload
    assert np.array_equal(syn[occluder], real[occluder])  # M_inp = not M_face or M_occ, exactly
    face = out.media.mask.astype(bool)
    outside = ~dilate(face.astype(np.uint8), GenerateConfig().mask_dilation).astype(bool)
    assert np.array_equal(syn[:, outside], real[:, outside])
    inner = ~dilate((~face).astype(np.uint8), 12).astype(bool) & ~dilate(occluder[0].astype(np.uint8), 12).astype(bool)
    assert np.abs(syn[0][inner].astype(int) - real[0][inner]).mean() > 10  # the mouth was re-rendered
    masks_path.unlink()


def test_missing_occlusion_models_fail_before_any_work(tiny_qwen_path):  # noqa: F811
    with pytest.raises(ConfigError, match="occlusion.sam2_checkpoint = None"):
        check_model_paths(load_config("configs/demo.yaml", ["occlusion.enabled=true",
                                                            f"occlusion.vlm_path={tiny_qwen_path}"]))
    with pytest.raises(ConfigError, match="filters.vlm_quality.model_path = None"):
        check_model_paths(load_config("configs/demo.yaml", ["occlusion.enabled=true"]))


@pytest.fixture(scope="module")
def random_sam2_checkpoint(tmp_path_factory):
    """A real SAM 2 checkpoint file holding random weights: the config path loads it as a user's."""
    from sam2.build_sam import build_sam2_video_predictor

    torch.manual_seed(0)
    model = build_sam2_video_predictor("configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu",
                                       hydra_overrides_extra=["++model.image_size=64"])
    path = tmp_path_factory.mktemp("sam2") / "sam2_random.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.mark.slow
def test_pipeline_with_occlusion_accounts_for_every_clip(tmp_path, talking_videos, tiny_qwen_path,  # noqa: F811
                                                         random_sam2_checkpoint):
    from manifests.table import read_table
    from manifests.verify import verify

    out = tmp_path / "out"
    code = run_factory(out, *SMALL, LOCAL, "occlusion.enabled=true", f"occlusion.vlm_path={tiny_qwen_path}",
                       f"occlusion.sam2_checkpoint={random_sam2_checkpoint}", "occlusion.image_size=64",
                       videos=talking_videos)
    assert code == 0 and verify(out)[0] == []
    rows = read_table(out / "samples.parquet")
    # a random model answers nonsense (or, rarely, "[]" or a box): every clip that left ingest is
    # either masked or rejected by the occlusion stage, and only masked clips become pairs
    ingested = [r for r in rows if r["kind"] in ("clip", "pair") and r["stage"] != "ingest"]
    rejected = {r["key"] for r in ingested if r["reason"] == "occlusion_vlm_malformed"}
    masked = {p.name.split(".")[0] for p in (out / "clips").rglob("*.occlusion-*.npz")}
    assert ingested and rejected | masked == {r["key"] for r in ingested} and not rejected & masked
    assert {r["key"] for r in ingested if r["kind"] == "pair"} <= masked
