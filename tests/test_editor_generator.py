"""The latent editor (FlashLips Stage 1) wired end to end: the generator contract on a tiny random
`LatentEditorGenerator`, `factory train-generator` on a demo clip store writing a generator folder
that `factory run` loads, exact resume of its recipe, and its config checks."""

from __future__ import annotations


import numpy as np
import pytest
from safetensors.torch import load_file

from factory.config import ConfigError
from factory.generators.latent_editor import LatentEditorGenerator
from factory.records import Record
from factory.stages.generate import GenerateConfig, GenerateStage
from tests.contracts import GeneratorContract, clip_pair_on_disk

CPU_CONFIG = "configs/generator_editor_cpu.yaml"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Three demo videos as 77-frame clips at 96 px, with the photo's landmarks in the crop."""
    from factory.demo import SENTENCES
    from tests.syncnet_corpus import demo_clip_store_with_landmarks

    return demo_clip_store_with_landmarks(tmp_path_factory.mktemp("editor_store"), sentences=SENTENCES[:3], crop=96)


def overrides(store, out, *more: str) -> list[str]:
    return [f"clip_stores=[{store.path}]", f"loop.out={out}", "loop.progress=false", "eval_segments=4", *more]


class TestLatentEditorGenerator(GeneratorContract):
    name = "latent_editor"

    def make_generator(self):
        return LatentEditorGenerator.tiny()

    def test_pixels_outside_the_mask_are_unchanged_after_compositing(self, tmp_path):
        """The contract's check, with the weights a learned generator needs."""
        LatentEditorGenerator.tiny().save_pretrained(tmp_path / "weights")
        real, alt = clip_pair_on_disk(tmp_path)
        stage = GenerateStage(GenerateConfig(generator=self.name, weights=str(tmp_path / "weights")))
        (record,) = stage([Record("k", "pair", meta={"clip_path": str(real), "alt_clip_path": str(alt)})])
        assert not record.rejected, record.rejected
        media = record.media
        outside = ~media.mask.astype(bool)
        assert np.array_equal(media.syn_frames[:, outside], media.real_frames[:, outside])
        assert not np.array_equal(media.syn_frames, media.real_frames)  # it did render inside
        stage.release()

    def test_the_alternative_lip_pose_drives_the_render(self):
        generator = self.make_generator()
        generator.setup("cpu")
        inp = self.make_inputs(1)[0]
        first = generator.generate_batch([inp])[0]
        inp.alt_frames = np.ascontiguousarray(inp.alt_frames[::-1])  # other mouths, same everything else
        assert not np.array_equal(generator.generate_batch([inp])[0], first)

    def test_without_weights_it_says_which_key_to_set(self):
        with pytest.raises(ConfigError, match="generate.weights"):
            LatentEditorGenerator().setup("cpu")


def test_bad_lip_pose_size_and_vae_kind_name_their_keys():
    from factory.trainers.generators import load_recipe

    with pytest.raises(ConfigError, match="'lip_pose.num_landmarks' is 20.*40"):
        load_recipe(CPU_CONFIG, ["lip_pose.num_landmarks=20"])
    with pytest.raises(ConfigError, match="'vae.kind'"):
        load_recipe(CPU_CONFIG, ["vae.kind=wan"])
    with pytest.raises(ConfigError, match="'editor.blocks'"):
        load_recipe(CPU_CONFIG, ["editor.blocks=3"])


@pytest.mark.slow  # ~40 s on a busy 2-core box: three short training runs
def test_resume_is_exact_two_plus_two_equals_four(store, tmp_path):
    from factory.trainers.generators import train_generator

    settings = ["loop.steps=4", "loop.eval_every=0", "loop.checkpoint_every=2", "loop.log_every=1"]
    whole = train_generator(CPU_CONFIG, overrides(store, tmp_path / "whole", *settings))
    first = train_generator(CPU_CONFIG, overrides(store, tmp_path / "cut", *settings), stop_at=2)
    assert first["steps"] == 2 and "weights" not in first
    resumed = train_generator(CPU_CONFIG, overrides(store, tmp_path / "cut", *settings))
    assert resumed["resumed_from"] == 2 and resumed["steps"] == 4
    for part in ("editor", "lip_pose", "vae"):
        a = load_file(str(tmp_path / "whole" / "final" / part / "diffusion_pytorch_model.safetensors"))
        b = load_file(str(tmp_path / "cut" / "final" / part / "diffusion_pytorch_model.safetensors"))
        assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a), part
    assert whole["loss_curve"] == resumed["loss_curve"]  # the same loss, step by step


@pytest.mark.slow  # ~2 min: a factory run (ingest with MediaPipe) on two short videos
def test_train_generator_then_factory_run_with_its_weights(store, tmp_path, talking_videos):
    from factory.cli import main
    from manifests.reader import iter_pairs
    from manifests.table import read_table
    from tests.cli import LOCAL, SMALL, run_factory

    out = tmp_path / "editor"
    assert main(["train-generator", CPU_CONFIG, *overrides(store, out, "loop.steps=2", "loop.eval_every=2")]) == 0
    final = out / "final"
    assert {p.name for p in final.iterdir()} >= {"config.json", "editor", "lip_pose", "vae"}
    again = LatentEditorGenerator.from_pretrained(final)
    assert again.settings.resolution == 64 and again.reference_frames == 2

    run = tmp_path / "run"
    assert run_factory(run, *SMALL, LOCAL, "generate.generator=latent_editor", "generate.settings=null",
                       f"generate.weights={final}",
                       videos=talking_videos) == 0
    table = [r for r in read_table(run / "samples.parquet") if r["kind"] == "pair"]
    assert table, "no pairs were generated"
    assert all(r["fate"] == "kept" or r["reason"] for r in table)
    # every pair went through the generator: rejections, if any, come from the filters' scores
    assert not any("generat" in str(r["reason"]) for r in table), [r["reason"] for r in table]
    for pair in iter_pairs(run / "manifest.json"):  # the kept ones (the filters judge a 2-step editor)
        assert pair["meta"]["generator"] == "latent_editor"


def test_a_frozen_local_vae_is_recorded_not_copied(store, tmp_path):
    """With vae.path (SDXL's VAE on a GPU; a saved tiny one here) and the VAE frozen, the generator
    folder names that folder instead of copying it, and loads from it."""
    import json

    from diffusers import AutoencoderKL

    from factory.generators.latent_editor import TINY_VAE
    from factory.trainers.generators import train_generator

    AutoencoderKL(**TINY_VAE).save_pretrained(tmp_path / "sdxl-vae")
    train_generator(CPU_CONFIG, overrides(store, tmp_path / "run", "loop.steps=1", "loop.eval_every=0",
                                          f"vae.path={tmp_path / 'sdxl-vae'}", "vae_trainable=false"))
    final = tmp_path / "run" / "final"
    assert not (final / "vae").exists()
    assert json.loads((final / "config.json").read_text())["vae"]["path"] == str((tmp_path / "sdxl-vae").resolve())
    generator = LatentEditorGenerator.from_pretrained(final)
    generator.setup("cpu")
    inp = TestLatentEditorGenerator().make_inputs(1)
    assert generator.generate_batch(inp)[0].shape == inp[0].real_frames.shape
