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


def stage(tiny_qwen_path, force, **settings) -> OcclusionStage:
    # random SAM 2 masks have any size: the area bound is tested with forced masks below
    cfg = OcclusionConfig(enabled=True, image_size=64, **{"max_crop_share": 1.0, "max_face_share": 1.0, **settings})
    return OcclusionStage(cfg, tiny_qwen_path, "occlusion.vlm_path", max_pixels=112 * 112,
                          allow_random_weights=True, logits_processor=force)


def clip_record(folder) -> Record:
    return Record("real", "clip", meta={"clip_path": str(folder / "real.npz")})


def test_boxes_are_found_propagated_stored_and_reused(clips, tiny_qwen_path):  # noqa: F811
    s = stage(tiny_qwen_path, None)
    occlusion_path(clips / "real.npz", s.tag).unlink(missing_ok=True)
    s.ensure_set_up()
    s.logits_processor = ForceText(s.vlm.processor.tokenizer, HAND)
    (record,) = s([clip_record(clips)])
    assert not record.rejected
    # asked about the first and the last frame (< 25 apart) in one batch; boxes back in crop pixels
    # (x 256/112), widened; the same hand on both probes is one occluder
    (occluder,) = record.meta["occluders"]
    assert occluder["label"] == "hand" and occluder["discarded"] is None
    assert occluder["boxes"] == {"0": [84, 139, 170, 197], "3": [84, 139, 170, 197]}
    assert s.logits_processor.batch_sizes == [2]
    assert record.meta["occlusion_masks"] == str(occlusion_path(clips / "real.npz", s.tag))  # travels in the record
    masks = load_occlusion(record.meta["occlusion_masks"])
    assert masks.shape == (T, S, S) and masks.dtype == bool
    asked = s.logits_processor.calls
    (again,) = s([clip_record(clips)])  # stored: the VLM is not asked again
    assert s.logits_processor.calls == asked and again.meta["occluders"] == record.meta["occluders"]
    other = stage(tiny_qwen_path, None)
    other.cfg.probe_every = 2
    assert masks_tag(other.cfg, tiny_qwen_path) != s.tag  # other settings never reuse these masks


def test_a_nonsense_answer_twice_rejects_the_clip(clips, tiny_qwen_path):  # noqa: F811
    s = stage(tiny_qwen_path, None)
    occlusion_path(clips / "real.npz", s.tag).unlink(missing_ok=True)
    s.ensure_set_up()
    s.logits_processor = ForceText(s.vlm.processor.tokenizer, "maybe a hand?")
    (record,) = s([clip_record(clips)])
    assert record.rejected == "occlusion_vlm_malformed" and s.logits_processor.batch_sizes == [2, 2]
    assert not occlusion_path(clips / "real.npz", s.tag).exists()


def test_the_same_occluder_on_several_probes_is_one_sam2_object(clips, tiny_qwen_path):  # noqa: F811
    s = stage(tiny_qwen_path, None, probe_every=1)  # probes 0, 1, 2, 3
    occlusion_path(clips / "real.npz", s.tag).unlink(missing_ok=True)
    s.ensure_set_up()
    moved = '[{"bbox_2d": [40, 61, 77, 86], "label": "hand"}]'  # the hand moved a little
    mic = '[{"bbox_2d": [37, 61, 74, 86], "label": "hand"}, {"bbox_2d": [5, 5, 20, 30], "label": "microphone"}]'
    s.logits_processor = ForceText(s.vlm.processor.tokenizer, [HAND, moved, mic, "[]"])
    prompts = []
    add = s.tracker.predictor.add_new_points_or_box

    def spy(state, frame_idx, obj_id, **kwargs):  # SAM 2 itself runs; we only note its prompts
        prompts.append((frame_idx, obj_id))
        return add(state, frame_idx=frame_idx, obj_id=obj_id, **kwargs)

    s.tracker.predictor.add_new_points_or_box = spy
    (record,) = s([clip_record(clips)])
    assert not record.rejected
    assert [(o["label"], sorted(o["boxes"])) for o in record.meta["occluders"]] == [
        ("hand", ["0", "1", "2"]), ("microphone", ["2"])]
    assert prompts == [(0, 0), (1, 0), (2, 0), (2, 1)]  # one object id per occluder, prompted on each probe
    assert load_occlusion(record.meta["occlusion_masks"]).shape == (T, S, S)


class ForcedMasks:
    """SAM 2's output forced, as ForceText forces the VLM's: object o gets masks[o] on every frame."""

    def __init__(self, *masks: np.ndarray):
        self.masks = masks

    def track_objects(self, frames, objects):
        assert len(objects) == len(self.masks)
        return np.stack([np.broadcast_to(m, frames.shape[:3]) for m in self.masks])


def big_and_small() -> tuple[np.ndarray, np.ndarray]:
    big, small = np.zeros((S, S), bool), np.zeros((S, S), bool)
    big[:, :] = True  # SAM 2 took the whole crop
    small[150:200, 90:150] = True  # a hand over the mouth: ~5 % of the crop
    return big, small


TWO = '[{"bbox_2d": [37, 61, 74, 86], "label": "hand"}, {"bbox_2d": [0, 0, 100, 100], "label": "scarf"}]'


@pytest.mark.parametrize("oversize", ["reject", "discard"])
def test_an_implausibly_large_mask_is_rejected_or_discarded_with_the_reason(clips, tiny_qwen_path,  # noqa: F811
                                                                           oversize):
    s = stage(tiny_qwen_path, None, max_crop_share=0.4, max_face_share=0.8, oversize=oversize)
    occlusion_path(clips / "real.npz", s.tag).unlink(missing_ok=True)
    s.ensure_set_up()
    s.logits_processor = ForceText(s.vlm.processor.tokenizer, TWO)
    big, small = big_and_small()
    s.tracker = ForcedMasks(small, big)
    (record,) = s([clip_record(clips)])
    hand, scarf = record.meta["occluders"]
    assert hand["discarded"] is None and 0.04 < hand["crop_share"] < 0.06
    assert scarf["discarded"] == "occluder_crop_share_above_0.4" and scarf["crop_share"] == 1.0
    if oversize == "reject":
        assert record.rejected == "occluder_crop_share_above_0.4" and record.meta["rejected_by"] == "occlusion"
        assert not occlusion_path(clips / "real.npz", s.tag).exists()
    else:
        assert not record.rejected
        assert np.array_equal(load_occlusion(record.meta["occlusion_masks"]), np.broadcast_to(small, (T, S, S)))


def test_a_mask_hiding_most_of_the_face_is_caught_by_the_face_share(clips, tiny_qwen_path):  # noqa: F811
    s = stage(tiny_qwen_path, None, max_crop_share=1.0, max_face_share=0.8)
    occlusion_path(clips / "real.npz", s.tag).unlink(missing_ok=True)
    s.ensure_set_up()
    s.logits_processor = ForceText(s.vlm.processor.tokenizer, HAND)
    face = load_clip_face(clips)
    s.tracker = ForcedMasks(face)  # exactly the face: SAM 2 segmented the face, not the hand
    (record,) = s([clip_record(clips)])
    (occluder,) = record.meta["occluders"]
    assert occluder["face_share"] == 1.0 and occluder["crop_share"] < 1.0
    assert record.rejected == "occluder_face_share_above_0.8"


def load_clip_face(folder) -> np.ndarray:
    from factory.clips import load_clip
    from factory.occlusion.objects import face_regions

    return face_regions(load_clip(folder / "real.npz").landmarks[:1], S, S)[0]


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
