"""The folder a trained X-Dub Stage II editor lives in (`factory train-dubber` writes it as
loop.out/final; the next phase starts from it; a dubbing command loads it):

    config.json   "kind": "xdub-stage2", the phase, the experts, sampler settings, where the VAE
                  and the audio encoder are
    editor/       the XDubEditor's base weights (diffusers layout, no LoRA)
    lip/          the lip LoRA expert (peft state dict + its settings), after phase 2
    texture/      the texture LoRA expert, after phase 3
    vae/, audio/  the frozen VAE / Whisper encoder, unless config.json records a local path

As the Stage I generator folder (factory/generators/dit_inpainter.py) does, a VAE or audio encoder
loaded from a local path is recorded by path (large, unchanged), a tiny random one is saved.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from factory.config import ConfigError
from factory.files import atomic_write
from factory.models.audio_features import save_audio_entry
from factory.models.lora_experts import base_state_dict, expert_names, load_expert, save_expert
from factory.models.vae import save_vae_entry

KIND = "xdub-stage2"
CONFIG_NAME, EDITOR_DIR, VAE_DIR, AUDIO_DIR = "config.json", "editor", "vae", "audio"
EXPERT_ORDER = ("lip", "texture")


def save_editor_folder(path: str | Path, model, *, vae, audio, lora_cfg, phase: int, settings: dict[str, Any]) -> None:
    """model: an XDubEditor (maybe with experts); vae: a factory.models.vae.VAE; audio: AudioFeatures."""
    path = Path(path)
    (path / EDITOR_DIR).mkdir(parents=True, exist_ok=True)
    model.save_config(path / EDITOR_DIR)
    save_file({k: v.detach().cpu().contiguous() for k, v in base_state_dict(model).items()},
              str(path / EDITOR_DIR / "diffusion_pytorch_model.safetensors"))
    experts = [name for name in EXPERT_ORDER if name in expert_names(model)]
    for name in experts:
        save_expert(model, name, path / name, lora_cfg)
    vae_entry = save_vae_entry(vae, path, VAE_DIR)
    audio_entry = save_audio_entry(audio, path, AUDIO_DIR)
    config = {"kind": KIND, "version": 1, "phase": phase, "experts": experts, "settings": settings,
              "editor": EDITOR_DIR, "vae": vae_entry, "audio": audio_entry}
    atomic_write(path / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True, default=str))


def read_editor_config(path: str | Path, key: str) -> dict[str, Any]:
    path = Path(path)
    file = path / CONFIG_NAME
    if not file.is_file():
        raise ConfigError(f"config key {key!r} = {str(path)!r}: no {CONFIG_NAME} there (an xdub-stage2 folder)")
    config = json.loads(file.read_text())
    if config.get("kind") != KIND:
        raise ConfigError(f"config key {key!r} = {str(path)!r} is not an {KIND} folder (kind {config.get('kind')!r})")
    return config


def load_editor_folder(path: str | Path, key: str = "checkpoint", experts: bool = True):
    """(XDubEditor with its experts, the folder's config dict, VAEConfig, AudioFeatureConfig)."""
    from factory.models.audio_features import audio_config_from_entry
    from factory.models.lora_experts import activate_expert
    from factory.models.vae import VAEConfig
    from factory.models.xdub_stage2 import XDubEditor

    path = Path(path)
    config = read_editor_config(path, key)
    model = XDubEditor.from_pretrained(path / config["editor"], local_files_only=True)
    if experts:
        for name in config.get("experts", []):
            load_expert(model, name, path / name)
        activate_expert(model, None)

    def inside(p: str) -> str:
        return str(path / p) if not Path(p).is_absolute() else p

    v = config["vae"]
    vae = VAEConfig(kind=v["kind"], path=inside(v["path"]), subfolder=v.get("subfolder"), dtype=v.get("dtype", "float32"))
    audio = audio_config_from_entry(config["audio"], path)  # log-mel or a Whisper folder
    return model, config, vae, audio
