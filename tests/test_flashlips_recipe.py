"""The `flashlips-refine` recipe end to end on a small pair manifest of the demo face: two-step runs
of each stage (editor from a latent_editor folder, then lip_flow from the editor's final folder),
the dubber folder that `factory dub` loads, exact resume of both stages, and config errors that
name their keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from factory.config import ConfigError

CPU_CONFIG = "configs/dubber_flashlips_cpu.yaml"


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Eleven 77-frame pairs of three demo videos at 96 px (about a minute: `factory pairs`)."""
    from factory.demo import SENTENCES
    from tests.flashlips_corpus import pair_manifest

    return pair_manifest(tmp_path_factory.mktemp("flashlips_pairs"), SENTENCES[:3], 96,
                         "filters.identity.enabled=false")


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A tiny random latent_editor generator folder: what `factory train-generator` writes."""
    from factory.generators.latent_editor import LatentEditorGenerator

    folder = tmp_path_factory.mktemp("stage1") / "latent_editor"
    LatentEditorGenerator.tiny(seed=0, resolution=64).save_pretrained(folder)
    return folder


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def overrides(pairs, out, *more: str) -> list[str]:
    return [f"manifests=[{pairs}]", f"loop.out={out}", "loop.progress=false", "eval_segments=4", *more]


def weights(folder) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in load_file(str(folder / "diffusion_pytorch_model.safetensors")).items()}


@pytest.fixture(scope="module")
def editor_run(pairs, stage1, tmp_path_factory):
    from factory.trainers.dubbers import train_dubber

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("editor_run") / "run"
    metrics = train_dubber(CPU_CONFIG, overrides(pairs, out, f"init_from={stage1}", "loop.steps=2",
                                                 "loop.eval_every=2", "loop.eval_at_start=false"))
    return out, metrics


def test_editor_stage_fine_tunes_the_stage1_folder_into_a_generator_folder(editor_run, stage1):
    from factory.generators.latent_editor import LatentEditorGenerator

    out, metrics = editor_run
    assert metrics["steps"] == 2 and np.isfinite(metrics["loss_curve"][-1]["loss"])
    m = metrics["last_eval"]
    for key in ("mouth_l1_edit", "mouth_l1_input", "mouth_l1_vae", "mouth_l1_edit_src_to_mod", "mouth_psnr_edit"):
        assert np.isfinite(m[key]), key
    assert m["mouth_l1_input"] > 0  # the synthetic side differs from the real one in the mouth
    final = out / "final"
    again = LatentEditorGenerator.from_pretrained(final)  # the next self-refinement round's generator
    assert again.settings.resolution == 64 and again.reference_frames == 2
    before, after = weights(stage1 / "editor"), weights(final / "editor")
    assert before.keys() == after.keys()
    assert any(not np.array_equal(before[k], after[k]) for k in before)  # started there, then trained
    same_shape = all(before[k].shape == after[k].shape for k in before)
    assert same_shape


@pytest.fixture(scope="module")
def flow_run(pairs, editor_run, tmp_path_factory):
    from factory.trainers.dubbers import train_dubber

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("flow_run") / "run"
    metrics = train_dubber(CPU_CONFIG, overrides(pairs, out, "stage=lip_flow", f"init_from={editor_run[0] / 'final'}",
                                                 "loop.steps=2", "loop.eval_every=2", "loop.eval_at_start=false"))
    return out, metrics


def test_lip_flow_stage_writes_a_dubber_folder_that_dubs_a_segment(flow_run, pairs):
    from factory.clip_store import ClipStore
    from factory.clips import load_clip
    from factory.trainers.flashlips_dubber import FlashLipsDubber

    out, metrics = flow_run
    m = metrics["last_eval"]
    assert {"pose_mse_sample", "pose_mse_mean_estimate", "pose_mse_mean_pose", "pose_mse_reference",
            "pose_mse_other_audio"} <= set(m)
    assert all(np.isfinite(v) and v > 0 for k, v in m.items() if k != "step"), m
    final = out / "final"
    assert {p.name for p in final.iterdir()} == {"config.json", "editor", "lip_flow"}
    flow = weights(final / "lip_flow")
    assert not np.allclose(flow["pose_std"], 1)  # the normalisation was set from the training poses

    dubber = FlashLipsDubber.from_pretrained(final, device="cpu")
    (store,) = (pairs.parent / "store").iterdir()
    clip = load_clip(ClipStore.open(store).records()[0].meta["clip_path"])
    frames, landmarks, audio = clip.frames[:9], clip.landmarks[:9], clip.audio[:9 * 640]
    out_frames = dubber.dub_segment(frames, landmarks, audio)
    assert out_frames.shape == frames.shape and out_frames.dtype == np.uint8
    assert np.array_equal(dubber.dub_segment(frames, landmarks, audio), out_frames)  # seeded sampler
    assert dubber.dub_segment(frames, landmarks, audio[:100]).shape == frames.shape  # short audio: padded
    poses = dubber.lip_poses(audio.astype(np.float32) / 32768, torch.zeros(2, 12))
    assert poses.shape == (9, 12) and torch.isfinite(poses).all()


def test_the_dubber_refuses_other_folders_naming_the_key(stage1, tmp_path):
    from factory.trainers.flashlips_dubber import FlashLipsDubber

    with pytest.raises(ConfigError, match="checkpoint = .*no config.json"):
        FlashLipsDubber.from_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="'latent_editor', not a flashlips-refine dubber"):
        FlashLipsDubber.from_pretrained(stage1)


def test_config_errors_name_their_keys(stage1):
    from factory.trainers.dubbers import load_recipe

    base = ["manifests=[somewhere]"]
    with pytest.raises(ConfigError, match="'stage'"):
        load_recipe(CPU_CONFIG, [*base, "stage=both"])
    with pytest.raises(ConfigError, match="'init_from' is not set"):
        load_recipe(CPU_CONFIG, [*base, "stage=lip_flow"])
    with pytest.raises(ConfigError, match="'reference_poses'"):
        load_recipe(CPU_CONFIG, [*base, "stage=lip_flow", f"init_from={stage1}", "reference_poses=6"])
    with pytest.raises(ConfigError, match="'flow.depth'"):
        load_recipe(CPU_CONFIG, [*base, "flow.depth=3"])
    with pytest.raises(ConfigError, match="'manifests' is empty"):
        load_recipe(CPU_CONFIG, [])
    with pytest.raises(ConfigError, match="unknown config key 'wav2vec.size'"):
        load_recipe(CPU_CONFIG, [*base, "wav2vec.size=3"])
    with pytest.raises(ConfigError, match="'wav2vec.path' is not set"):
        load_recipe(CPU_CONFIG, [*base, "stage=lip_flow", f"init_from={stage1}", "wav2vec.tiny=null"]) \
            .build_model(torch.device("cpu"))


def test_the_gpu_config_loads_and_names_its_missing_weights():
    from factory.trainers.dubbers import load_recipe

    recipe = load_recipe("configs/dubber_flashlips_gpu.yaml", ["manifests=[somewhere]"])
    assert recipe.config.data.resolution == 256 and recipe.config.loop.precision == "bf16"
    with pytest.raises(ConfigError, match="'vae.path'"):
        recipe.build_model(torch.device("cpu"))


@pytest.mark.slow  # ~1 min on a busy 2-core box: three short runs of each stage
@pytest.mark.parametrize("stage", ["editor", "lip_flow"])
def test_resume_is_exact_two_plus_two_equals_four(stage, pairs, stage1, editor_run, tmp_path, one_thread):
    from factory.trainers.dubbers import train_dubber

    init = stage1 if stage == "editor" else editor_run[0] / "final"
    settings = [f"stage={stage}", f"init_from={init}", "loop.steps=4", "loop.eval_every=0", "loop.checkpoint_every=2",
                "loop.log_every=1"]
    whole = train_dubber(CPU_CONFIG, overrides(pairs, tmp_path / "whole", *settings))
    first = train_dubber(CPU_CONFIG, overrides(pairs, tmp_path / "cut", *settings), stop_at=2)
    assert first["steps"] == 2 and "weights" not in first
    resumed = train_dubber(CPU_CONFIG, overrides(pairs, tmp_path / "cut", *settings))
    assert resumed["resumed_from"] == 2 and resumed["steps"] == 4
    parts = ("editor", "lip_pose", "vae") if stage == "editor" else ("lip_flow",)
    for part in parts:
        a, b = weights(tmp_path / "whole" / "final" / part), weights(tmp_path / "cut" / "final" / part)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), part
    assert whole["loss_curve"] == resumed["loss_curve"]  # the same loss, step by step
