"""Contract suites (diffusers-style mixins) that every generator and filter test class inherits.

    class TestMyGenerator(GeneratorContract):
        name = "my_generator"
        def make_generator(self): ...

    class TestMyFilter(FilterContract):
        def make_filter(self, soft=False): ...
        def make_records(self): ...   # a few pair records the filter can score

A new generator or filter gets the guarantees the factory relies on checked by subclassing.
"""

from __future__ import annotations

import copy
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np

from factory.clips import Clip, save_clip
from factory.faces.align import template
from factory.generators import GenerationInput, Generator, generator_class
from factory.records import Record
from factory.stage import threshold_verdict
from factory.stages.generate import GenerateConfig, GenerateStage

T, S = 6, 128


def clip_pair_on_disk(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """A real clip and an alternative of the same layout: textured frames, template landmarks
    (so the lower-face mask is a real one), real-length audio."""
    rng = np.random.default_rng(seed)
    lms = np.repeat(template(S)[None], T, 0).astype(np.float32)
    lms_alt = lms.copy()
    lms_alt[:, :, 1] += rng.normal(0, 0.5, lms.shape[:2])  # a little jitter: the jaw hull differs
    transforms = np.repeat(np.eye(2, 3, dtype=np.float32)[None], T, 0)
    audio = (rng.normal(0, 3000, T * 640)).astype(np.int16)
    paths = []
    for name, landmarks in (("real", lms), ("alt", lms_alt)):
        frames = rng.integers(0, 256, (T, S, S, 3), dtype=np.uint8)
        path = folder / f"{name}.npz"
        save_clip(path, Clip(frames, landmarks, transforms, audio))
        paths.append(path)
    return paths[0], paths[1]


class GeneratorContract:
    name: str = ""  # the registered generator name

    def make_generator(self) -> Generator:
        return generator_class(self.name)()

    def make_inputs(self, n: int = 2) -> list[GenerationInput]:
        rng = np.random.default_rng(1)
        out = []
        for i in range(n):
            frames = rng.integers(0, 256, (2, T, S, S, 3), dtype=np.uint8)
            masks = np.zeros((T, S, S), np.uint8)
            masks[:, S // 2:, S // 4: 3 * S // 4] = 1
            lms = np.repeat(template(S)[None], T, 0).astype(np.float32)
            audio = rng.normal(0, 3000, T * 640).astype(np.int16)
            out.append(GenerationInput(key=f"k{i}", real_frames=frames[0], real_landmarks=lms, real_audio=audio,
                                       alt_frames=frames[1], alt_landmarks=lms, alt_audio=audio, masks=masks,
                                       reference_frames=frames[0][:2], seed=i))
        return out

    def test_output_shape_and_dtype(self):
        generator = self.make_generator()
        generator.setup("cpu")
        inputs = self.make_inputs()
        outputs = generator.generate_batch(inputs)
        assert len(outputs) == len(inputs)
        for inp, out in zip(inputs, outputs):
            assert out.dtype == np.uint8 and out.shape == inp.real_frames.shape

    def test_same_seed_same_output(self):
        a, b = self.make_generator(), self.make_generator()
        a.setup("cpu"), b.setup("cpu")
        for x, y in zip(a.generate_batch(self.make_inputs()), b.generate_batch(self.make_inputs())):
            assert np.array_equal(x, y)

    def test_pixels_outside_the_mask_are_unchanged_after_compositing(self, tmp_path):
        real, alt = clip_pair_on_disk(tmp_path)
        stage = GenerateStage(GenerateConfig(generator=self.name))
        (record,) = stage([Record("k", "pair", meta={"clip_path": str(real), "alt_clip_path": str(alt)})])
        assert not record.rejected, record.rejected
        media = record.media
        outside = ~media.mask.astype(bool)  # the mask is the edit's support (alpha > 0)
        assert media.syn_frames.dtype == np.uint8 and media.syn_frames.shape == media.real_frames.shape
        assert np.array_equal(media.syn_frames[:, outside], media.real_frames[:, outside])
        stage.release()  # what executors do when a map ends: the generator (and its GPU memory) goes
        assert stage.generator is None and not stage.is_set_up

    def test_save_and_load_pretrained_round_trip(self, tmp_path):
        generator = self.make_generator()
        generator.save_pretrained(tmp_path / "g")
        again = type(generator).from_pretrained(tmp_path / "g")
        assert again.settings == generator.settings
        generator.setup("cpu"), again.setup("cpu")
        for x, y in zip(generator.generate_batch(self.make_inputs()), again.generate_batch(self.make_inputs())):
            assert np.array_equal(x, y)

    def test_loadable_by_name_through_the_entry_point(self):
        points = {ep.name: ep for ep in entry_points(group="factory.generators")}
        assert self.name in points, f"declare {self.name} under [project.entry-points.'factory.generators']"
        assert points[self.name].load() is generator_class(self.name)


class FilterContract:
    """`make_records` must give at least one pair the filter keeps at its default thresholds."""

    def make_filter(self, soft: bool = False):
        raise NotImplementedError

    def make_records(self) -> list[Record]:
        raise NotImplementedError

    def scored(self, soft: bool = False) -> list[Record]:
        stage = self.make_filter(soft=soft)
        return stage(copy.deepcopy(self.make_records()))

    def test_every_threshold_score_is_recorded(self):
        stage = self.make_filter()
        for record in self.scored(soft=True):
            assert set(stage.thresholds) <= set(record.meta["scores"]), record.meta.get("scores")

    def test_thresholds_are_directional(self):
        """Moving a threshold past a recorded score flips the verdict, in the threshold's direction."""
        stage = self.make_filter()
        for record in self.scored(soft=True):
            scores = record.meta["scores"]
            for name, (op, _) in stage.thresholds.items():
                value = scores[name]
                if isinstance(value, float) and np.isnan(value):
                    continue
                lower_bound = op.startswith(">")
                strict = {name: (op, value + 1e-3 if lower_bound else value - 1e-3)}
                loose = {name: (op, value - 1e-3 if lower_bound else value + 1e-3)}
                assert threshold_verdict(scores, strict) is not None
                assert threshold_verdict(scores, loose) is None

    def test_soft_and_hard_modes_agree_on_the_verdict(self):
        hard, soft = self.scored(soft=False), self.scored(soft=True)
        for h, s in zip(hard, soft):
            assert h.rejected == s.filtered  # the same reason, set aside instead of dropped
            assert not s.rejected

    def test_a_pair_at_default_thresholds_is_kept(self):
        assert any(not r.rejected for r in self.scored())


def assert_refilter_reproduces_the_run(out: Path) -> None:
    """Re-judging a finished run's recorded scores with its own thresholds gives its verdicts."""
    from filters.registry import filter_thresholds
    from manifests.ledger import Ledger
    from pipelines.refilter import load_refilter_config, rejudge

    run_cfg, _ = load_refilter_config(out, [])
    ledger = Ledger(out / "state" / "ledger.jsonl")
    ledger.close()
    entries, kept, _ = rejudge(ledger.entries, filter_thresholds(run_cfg.filters))
    pairs = {k: e for k, e in ledger.entries.items() if e.get("kind") == "pair"}
    assert pairs, "the run wrote no pairs"
    for key, entry in pairs.items():
        assert (entries[key]["fate"], entries[key]["reason"]) == (entry["fate"], entry["reason"]), key
    assert sorted(kept) == sorted(k for k, e in pairs.items() if e["fate"] == "kept")

