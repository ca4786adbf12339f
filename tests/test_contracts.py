"""Every built-in generator and filter passes its contract suite (tests/contracts.py); the stage
list's declared contracts fail before any work when a provider is missing."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from factory.faces.align import template
from factory.faces.landmarks import MOUTH
from factory.generators import Generator, register
from factory.payload import ContractError, PairMedia, check_contracts
from factory.records import Record
from filters.alt_identity import AltIdentityConfig, AltIdentityFilter
from filters.identity import IdentityConfig, IdentityFilter
from filters.mouth_distance import MouthDistanceConfig, MouthDistanceFilter
from filters.real_clip import RealClipConfig, RealClipFilter
from filters.registry import filter_specs
from filters.vlm_quality import VLMQualityConfig, VLMQualityFilter
from factory.stage import Resources
from factory.vlm.quality import ASPECTS
from tests.contracts import FilterContract, GeneratorContract, assert_refilter_reproduces_the_run
from tests.test_identity import clip, faces  # noqa: F401  (fixture: two real aligned faces)
from tests.tiny_qwen import ForceText, tiny_qwen_path  # noqa: F401  (fixture)


class TestTransplantGenerator(GeneratorContract):
    name = "transplant"


class TestRealClipFilter(FilterContract):
    def make_filter(self, soft=False):
        return RealClipFilter(RealClipConfig(), soft=soft)

    def make_records(self):
        from skimage import data

        from tests.test_real_clip import real_clip_record

        face = np.ascontiguousarray(data.astronaut())
        small = cv2.resize(face, (128, 128), interpolation=cv2.INTER_AREA)  # face_px about 27: below 64
        return [real_clip_record(face, "kept"), real_clip_record(small, "small")]


class TestSyncFilter(FilterContract):
    def make_filter(self, soft=False):
        from filters.sync import SyncConfig, SyncFilter

        return SyncFilter(SyncConfig(), soft=soft)

    def make_records(self):  # ingest's numbers in the clip meta the pair inherits
        return [Record("synced", "pair", meta={"sync_conf": 6.5, "av_offset": 1, "sync_dist": 4.0}),
                Record("voice_over", "pair", meta={"sync_conf": 0.8, "av_offset": -11, "sync_dist": 9.0})]


class TestMouthDistanceFilter(FilterContract):
    def make_filter(self, soft=False):
        return MouthDistanceFilter(MouthDistanceConfig(), soft=soft)

    def make_records(self):
        t = np.repeat(template(256)[None], 4, 0).astype(np.float32)
        records = []
        for i, shift in enumerate((2.0, 0.4)):  # lips moved 2 px (kept) and 0.4 px (too similar)
            syn = t.copy()
            syn[:, MOUTH, 1] += shift
            records.append(Record(f"p{i}", "pair", media=PairMedia(real_tracked=t, syn_tracked=syn)))
        lost = t.copy()
        lost[:2] = np.nan  # the face is lost on half the synthetic frames
        records.append(Record("lost", "pair", media=PairMedia(real_tracked=t, syn_tracked=lost)))
        return records


class TestAltIdentityFilter(FilterContract):
    def make_filter(self, soft=False):
        return AltIdentityFilter(AltIdentityConfig(), soft=soft)

    def make_records(self):
        rng = np.random.default_rng(0)
        me = rng.normal(size=128)
        me /= np.linalg.norm(me)
        close, other = me + rng.normal(scale=0.02, size=128), rng.normal(size=128)
        return [Record(name, "pair", meta={"identity": me.tolist(), "alt_identity": (v / np.linalg.norm(v)).tolist()})
                for name, v in (("same", close), ("other", other))]


class TestIdentityFilter(FilterContract):
    @pytest.fixture(autouse=True)
    def _faces(self, faces):  # noqa: F811
        self.faces = faces

    def make_filter(self, soft=False):
        return IdentityFilter(IdentityConfig(frames=2), soft=soft)

    def make_records(self):
        astronaut, hanks = self.faces
        return [Record("same", "pair", media=PairMedia(real_frames=clip(astronaut, 2), syn_frames=clip(astronaut, 2, 1))),
                Record("other", "pair", media=PairMedia(real_frames=clip(astronaut, 2), syn_frames=clip(hanks, 2)))]


class TestVLMQualityFilter(FilterContract):
    @pytest.fixture(autouse=True)
    def _model(self, tiny_qwen_path):  # noqa: F811
        self.path = tiny_qwen_path

    def make_filter(self, soft=False):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        good, poor = (json.dumps(dict(zip(ASPECTS, v))) for v in ([5, 4, 5, 4, 5, 4], [3, 3, 2, 4, 3, 3]))
        cfg = VLMQualityConfig(enabled=True, model_path=self.path, runs=1, run_length=2, max_pixels=56 * 56,
                               max_new_tokens=160,
                               resources=Resources(num_gpus=0, batch_size=2))
        return VLMQualityFilter(cfg, soft=soft, logits_processor=ForceText(tokenizer, [good, poor]))

    def make_records(self):
        rng = np.random.default_rng(0)
        return [Record(f"p{i}", "pair", meta={"fps": 25},
                       media=PairMedia(syn_frames=rng.integers(0, 256, (4, 48, 48, 3), dtype=np.uint8)))
                for i in range(2)]


def test_every_registered_filter_has_a_contract_suite():
    tested = {"real_clip", "sync", "alt_identity", "mouth_distance", "identity", "vlm_quality"}
    assert {spec.name for spec in filter_specs()} <= tested, "add a FilterContract subclass for the new filter"


class Needs:
    def __init__(self, name, requires=(), provides=()):
        self.name, self.requires, self.provides = name, requires, provides


def test_contracts_name_the_stage_and_the_missing_field():
    check_contracts([Needs("gen", provides=("syn_frames",)), Needs("f", requires=("syn_frames",))])
    with pytest.raises(ContractError, match="stage 'f' requires pair field 'syn_frames'"):
        check_contracts([Needs("gen", provides=("real_frames",)), Needs("f", requires=("syn_frames",))])
    with pytest.raises(ContractError, match="unknown pair field 'lips'"):
        check_contracts([Needs("gen", provides=("lips",))])


def test_a_config_without_a_provider_fails_before_any_work():
    from pipelines.pseudo_pairs import pair_stages
    from pipelines.settings import load_factory_config

    cfg = load_factory_config("configs/demo.yaml")
    stages = pair_stages(cfg)
    assert [s.name for s in stages] == ["generate", "track", "real_clip", "sync", "alt_identity", "mouth_distance", "identity",
                                        "augment", "encode"]
    without_tracking = [s for s in stages if s.name != "track"]
    with pytest.raises(ContractError, match="stage 'mouth_distance' requires pair field 'real_tracked'"):
        check_contracts(without_tracking)


@register
class RecordingGenerator(Generator):
    """Asks for reference and motion frames and keeps what it was given (re-renders nothing new)."""

    name = "test_recording"
    reference_frames, motion_frames = 2, 3
    seen: list = []

    def generate(self, inp):
        RecordingGenerator.seen.append(inp)
        return inp.alt_frames


def test_the_stage_passes_the_reference_and_motion_frames_a_generator_asks_for(tmp_path):
    from factory.clips import load_clip
    from factory.stages.generate import GenerateConfig, GenerateStage
    from tests.contracts import clip_pair_on_disk

    real, alt = clip_pair_on_disk(tmp_path)
    (tmp_path / "before").mkdir()
    before, _ = clip_pair_on_disk(tmp_path / "before", seed=5)
    meta = {"clip_path": str(real), "alt_clip_path": str(alt), "motion_clip_path": str(before)}
    RecordingGenerator.seen.clear()
    (record,) = GenerateStage(GenerateConfig(generator="test_recording"), seed=3)([Record("k", "pair", meta=meta)])
    (inp,) = RecordingGenerator.seen
    frames = load_clip(real).frames
    assert np.array_equal(inp.reference_frames, frames[[0, len(frames) - 1]])
    assert np.array_equal(inp.motion_frames, load_clip(before).frames[-3:])
    assert inp.masks.shape == frames.shape[:3] and inp.real_audio is not None and inp.alt_audio is not None
    assert not record.rejected and record.meta["generator"] == "test_recording"


def test_refilter_reproduces_a_finished_runs_verdicts(finished_run):
    assert_refilter_reproduces_the_run(finished_run)
