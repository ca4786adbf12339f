"""The `xdub-stage2` recipe on the session's finished demo run (tests.conftest.finished_run: real
pairs through factory/trainers/pair_data.py) at 32 px with tiny random models: each phase trains
two steps and hands its folder to the next (only its own part moves), phase 1 starts from a Stage I
generator folder with its weights, a resumed run computes what an uninterrupted one does, and
configs that cannot work are refused naming the key."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from factory.config import ConfigError
from factory.models.lora_experts import expert_names
from factory.trainers.dubbers import load_recipe, train_dubber
from factory.trainers.loop import run_training

CONFIG = "configs/dubber_xdub_cpu.yaml"


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def tiny(run, out, *extra) -> list[str]:
    """The CPU config cut to seconds: 9-frame segments (3 latent frames, the first the motion frame)."""
    return [f"manifests=[{run}]", "data.segment_frames=9", "data.resolution=32", "data.shuffle_buffer=4",
            "model.motion_latent_frames=1", "model.num_layers=2", "model.ffn_dim=48", "lora.rank=2", "lora.alpha=2.0",
            "loop.steps=2", "loop.batch_size=2", "loop.warmup=0", "loop.eval_every=0", "loop.log_every=1",
            "eval.samples=2", "eval.batch_size=2", "eval.steps=2", f"loop.out={out}", *extra]


def weights(folder, part: str = "editor") -> dict[str, torch.Tensor]:
    name = "diffusion_pytorch_model.safetensors" if part == "editor" else "adapter_model.safetensors"
    return load_file(str(folder / part / name))


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_three_phases_chain_each_training_its_own_part(finished_run, tmp_path):
    p1, p2, p3 = tmp_path / "p1", tmp_path / "p2", tmp_path / "p3"
    m1 = train_dubber(CONFIG, tiny(finished_run, p1, "phase=1", "loop.eval_every=2"))
    assert m1["steps"] == 2 and (p1 / "final" / "editor").is_dir()
    ev = m1["last_eval"]  # held-out pairs sampled and scored beside the "input unchanged" baseline
    assert {"latent_l1_editor", "latent_l1_synthetic", "mouth_l1_editor", "mouth_l1_synthetic"} <= ev.keys()
    assert json.loads((p1 / "final" / "config.json").read_text())["experts"] == []

    m2 = train_dubber(CONFIG, tiny(finished_run, p2, "phase=2", f"init_from={p1 / 'final'}"))
    assert m2["steps"] == 2
    assert same(weights(p2 / "final"), weights(p1 / "final"))  # the base is frozen in phase 2
    assert (p2 / "final" / "lip").is_dir() and not (p2 / "final" / "texture").exists()
    lip = weights(p2 / "final", "lip")
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in lip.items())  # B moved from zero

    m3 = train_dubber(CONFIG, tiny(finished_run, p3, "phase=3", f"init_from={p2 / 'final'}"))
    assert m3["steps"] == 2
    assert same(weights(p3 / "final"), weights(p1 / "final"))
    assert same(weights(p3 / "final", "lip"), lip)  # the lip expert is phase 2's
    texture = weights(p3 / "final", "texture")
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in texture.items())
    saved = json.loads((p3 / "final" / "config.json").read_text())
    assert saved["experts"] == ["lip", "texture"] and saved["phase"] == 3

    # the folder loads back: base, both experts (off until a sampler routes them), the frozen VAE and encoder
    from factory.models.audio_features import AudioFeatures
    from factory.models.lora_experts import expert_state
    from factory.models.vae import VAE
    from factory.models.xdub_folder import load_editor_folder

    model, _, vae, audio = load_editor_folder(p3 / "final")
    assert expert_names(model) == ["lip", "texture"] and expert_state(model) is None
    assert VAE(vae).latent_channels == model.config.latent_channels
    assert AudioFeatures(audio).dim == model.config.audio_dim


def test_phase_losses_are_logged(finished_run, tmp_path):
    """Phase 2 adds the SyncNet term; phase 3 (audio dropped for half the samples) the identity term."""
    p1 = tmp_path / "p1"
    train_dubber(CONFIG, tiny(finished_run, p1, "phase=1", "loop.steps=1"))
    recipe = load_recipe(CONFIG, tiny(finished_run, tmp_path / "p2", "phase=2", f"init_from={p1 / 'final'}"))
    model = recipe.build_model(torch.device("cpu"))
    assert expert_names(model) == ["lip"]
    assert {n for n, p in model.named_parameters() if p.requires_grad} == \
        {n for n, _ in model.named_parameters() if ".lora_" in n and ".lip." in n}
    batch = next(iter(recipe.train_batches(2, 0, 1, 0)))
    torch.manual_seed(0)
    loss, metrics = recipe.loss(model, batch, 0)
    assert metrics["sync"] > 0 and float(loss.detach()) == pytest.approx(metrics["flow"] + 0.05 * metrics["sync"], rel=1e-5)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if ".lora_B." in n)

    recipe3 = load_recipe(CONFIG, tiny(finished_run, tmp_path / "p3", "phase=3", f"init_from={p1 / 'final'}",
                                       "loss.audio_drop_prob=1.0"))  # every sample silent: the identity term counts
    model3 = recipe3.build_model(torch.device("cpu"))
    loss, metrics = recipe3.loss(model3, batch, 0)
    assert metrics["identity"] > 0 and float(loss.detach()) == pytest.approx(metrics["flow"] + 0.1 * metrics["identity"], rel=1e-5)
    recipe3.config.loss.audio_drop_prob = 0.0  # nobody silent: no identity term
    _, metrics = recipe3.loss(model3, batch, 0)
    assert metrics["identity"] == 0.0


def test_phase_one_starts_from_a_stage_one_generator(finished_run, tmp_path):
    from factory.generators.dit_inpainter import DiTInpainterGenerator

    stage1 = tmp_path / "stage1"
    gen = DiTInpainterGenerator.tiny(seed=3)
    gen.save_pretrained(stage1)
    recipe = load_recipe(CONFIG, tiny(finished_run, tmp_path / "p1", f"init_from={stage1}", "vae.tiny={}",
                                          "audio.kind=whisper"))  # the tiny generator's: a tiny Whisper
    model = recipe.build_model(torch.device("cpu"))
    assert model.config.num_reference_frames == 3  # 9 frames -> 3 latent frames, the synthetic video's
    theirs = gen.dit.state_dict()
    assert same(model.state_dict(), theirs)


def test_resume_is_exact(finished_run, tmp_path):
    """Phase 2 (flow + SyncNet losses, its own RNG draws): 4 steps == 2 + resume + 2."""
    p1 = tmp_path / "p1"
    train_dubber(CONFIG, tiny(finished_run, p1, "phase=1", "loop.steps=1"))
    args = ["phase=2", f"init_from={p1 / 'final'}", "loop.steps=4", "loop.checkpoint_every=2"]
    straight = train_dubber(CONFIG, tiny(finished_run, tmp_path / "straight", *args))
    run_training(load_recipe(CONFIG, tiny(finished_run, tmp_path / "resumed", *args)), stop_at=2)
    resumed = train_dubber(CONFIG, tiny(finished_run, tmp_path / "resumed", *args))
    assert resumed["resumed_from"] == 2
    assert same(weights(tmp_path / "straight" / "final", "lip"), weights(tmp_path / "resumed" / "final", "lip"))
    assert straight["loss_curve"][-1]["loss"] == resumed["loss_curve"][-1]["loss"]


def test_bad_configs_name_their_key(finished_run, tmp_path):
    with pytest.raises(ConfigError, match="'phase'"):
        load_recipe(CONFIG, tiny(finished_run, tmp_path, "phase=4"))
    with pytest.raises(ConfigError, match="'init_from' is required"):
        load_recipe(CONFIG, tiny(finished_run, tmp_path, "phase=2"))
    with pytest.raises(ConfigError, match="'model.num_reference_frames'"):
        load_recipe(CONFIG, tiny(finished_run, tmp_path, "model.num_reference_frames=3"))
    with pytest.raises(ConfigError, match="'recipe'"):
        load_recipe(CONFIG, ["recipe=nope"])
    recipe = load_recipe(CONFIG, tiny(finished_run, tmp_path, "phase=2", f"init_from={tmp_path}"))
    with pytest.raises(ConfigError, match="init_from"):
        recipe.build_model(torch.device("cpu"))
    recipe = load_recipe(CONFIG, tiny(finished_run, tmp_path, "syncnet.tiny=null", "phase=2", f"init_from={tmp_path}"))
    with pytest.raises(ConfigError, match="syncnet.path"):
        recipe.syncnet(torch.device("cpu"))
