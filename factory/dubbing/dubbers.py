"""The registry that picks the dubber (protocol.py) `factory dub` runs for a checkpoint folder.

The registry is keyed by the checkpoint folder's `config.json`: the name under its first key of
NAME_KEYS: `recipe`, `dubber` (a flashlips-refine dubber folder), `kind` (an xdub-stage2 folder),
or else `generator` (`factory train-generator`'s folders). Every registered mask-based generator
(transplant, dit_inpainter, latent_editor, entry-point plugins) runs through one adapter
(masked.py); a mask-free dubber plugs in with one entry (xdub.py, flashlips.py; imported by the
package's __init__):

    @register_dubber("xdub-stage2")
    def load_xdub(folder: Path | None, config: dict) -> Dubber: ...
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from factory.config import ConfigError
from factory.generators.base import CONFIG_NAME

from factory.dubbing.protocol import Dubber

NAME_KEYS = ("recipe", "dubber", "kind", "generator")  # where each folder kind writes its name
Loader = Callable[[Path | None, dict[str, Any]], Dubber]
_DUBBERS: dict[str, Loader] = {}


def register_dubber(name: str) -> Callable[[Loader], Loader]:
    def add(loader: Loader) -> Loader:
        _DUBBERS[name] = loader
        return loader
    return add


def dubber_names() -> list[str]:
    from factory.generators import generator_names

    return sorted(set(_DUBBERS) | set(generator_names()))


def checkpoint_config(folder: str | Path) -> dict[str, Any]:
    """The folder's config.json; ConfigError (exit 2) when the folder or the file is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"--checkpoint {str(folder)!r} is not a folder (give a folder written by "
                          "`factory train-generator` / `factory train-dubber`, or --generator transplant)")
    if not (folder / CONFIG_NAME).is_file():
        raise ConfigError(f"--checkpoint {str(folder)!r} holds no {CONFIG_NAME}: not a generator or dubber folder")
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--checkpoint {str(folder)!r}: {CONFIG_NAME} is not JSON ({exc})") from exc
    if not isinstance(config, dict) or not folder_name(config):
        raise ConfigError(f"--checkpoint {str(folder)!r}: {CONFIG_NAME} names no 'recipe' or 'generator'")
    return config


def folder_name(config: dict[str, Any]) -> str | None:
    """The dubber or generator a folder's config.json names."""
    return next((config[k] for k in NAME_KEYS if isinstance(config.get(k), str) and config[k]), None)


def load_dubber(checkpoint: str | Path | None = None, generator: str | None = None) -> Dubber:
    """The dubber in `checkpoint` (a folder), or the weight-free generator named `generator`."""
    from factory.generators import generator_class, generator_names

    if (checkpoint is None) == (generator is None):
        raise ConfigError("give either --checkpoint DIR or --generator NAME (a generator without weights)")
    folder = Path(checkpoint) if checkpoint is not None else None
    config = checkpoint_config(folder) if folder is not None else {"generator": generator}
    key = folder_name(config)
    if key in _DUBBERS:
        return _DUBBERS[key](folder, config)
    if key in generator_names():
        from factory.dubbing.masked import MaskedGeneratorDubber

        cls = generator_class(key)
        if folder is None:
            if cls.needs_weights:
                raise ConfigError(f"generator {key!r} is learned: give --checkpoint DIR (the folder "
                                  "`factory train-generator` writes as loop.out/final)")
            return MaskedGeneratorDubber(cls())
        return MaskedGeneratorDubber(cls.from_pretrained(folder, key="--checkpoint"))
    where = f"--checkpoint {str(folder)!r} holds" if folder is not None else "--generator names"
    raise ConfigError(f"{where} {key!r}, which factory dub cannot run (known: {', '.join(dubber_names())})")
