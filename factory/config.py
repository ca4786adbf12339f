"""One config loader for every command: a typed dataclass schema, YAML files, `key=value` overrides.

OmegaConf structured configs do the work: the schema's types are checked (an `int` key refuses
`abc`), unknown keys fail naming the full key, and the result is the schema's own dataclass.
Components own their settings: each settings class lives beside its stage, filter or generator,
and a command composes them into its schema (`pipelines/settings.py` for `factory run`).

Override values are parsed as YAML data (`yaml.safe_load`), never evaluated. On the command line a
`#` is text, not a YAML comment: `input.paths=[/data/my #1 videos]` names that folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad config: unknown key, wrong type, missing file. The CLI exits non-zero on it."""


def read_yaml(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """`a.b=value` items into a nested dict (values are YAML data: `[x, y]`, `null`, `1e-3`)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, raw = item.split("=", 1)
        value = _parse_value(raw, key.strip()) if raw != "" else None
        keys = key.strip().split(".")
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{k}' is not a section")
        node[keys[-1]] = value
    return data


# A shell has already taken its comments out of a command line: a `#` left in a value is part of it
# (a path like `/data/my #1 videos`). YAML would read ` #...` as a comment, so it is swapped for a
# private-use character while parsing and put back in every string afterwards.
_HASH = "\ue000"


def _parse_value(raw: str, key: str) -> Any:
    try:
        return _restore_hash(yaml.safe_load(raw.replace("#", _HASH)))
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"override {key}={raw}: not a valid value ({problem}); a list is "
                          "[a, b], and text holding YAML characters goes in quotes") from None


def _restore_hash(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace(_HASH, "#")
    if isinstance(value, list):
        return [_restore_hash(v) for v in value]
    if isinstance(value, dict):
        return {_restore_hash(k): _restore_hash(v) for k, v in value.items()}
    return value


def build(schema: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Validate a nested dict against a dataclass schema and return an instance of it. `prefix`
    names where the section sits (e.g. `generate.settings.`), for error messages."""
    try:
        base = OmegaConf.structured(schema)
        OmegaConf.set_struct(base, True)
        merged = OmegaConf.merge(base, OmegaConf.create(_escape(data)))
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise ConfigError(_explain(exc, prefix)) from None


def load_config(schema: type[T], path: str | Path | None = None, overrides: Iterable[str] = ()) -> T:
    """The schema's dataclass from a YAML file (optional) and `key=value` overrides."""
    return build(schema, apply_overrides(read_yaml(path), overrides))


def _escape(value: Any) -> Any:
    """Config values are data: a `${...}` in a string is text, not an interpolation to resolve."""
    if isinstance(value, dict):
        return {k: _escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape(v) for v in value]
    if isinstance(value, str) and "${" in value:
        return value.replace("${", "\\${")
    return value


def _explain(exc: OmegaConfBaseException, prefix: str = "") -> str:
    key = getattr(exc, "full_key", None)
    key = f"{prefix}{key}" if key else key
    first = str(exc).splitlines()[0]
    if "not in struct" in first or "not in '" in first:
        parent = key.rsplit(".", 1)[0] if key and "." in key else None
        return f"unknown config key '{key}'" + (f" (no such key in section '{parent}')" if parent else "")
    return f"config key '{key}': {first}" if key else first


# -- saving, hashing, comparing ---------------------------------------------------------------

def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)


def config_yaml(cfg: Any) -> str:
    """The settings as the YAML a run saves (`storage.put_bytes(OUT/config.yaml, config_yaml(cfg))`)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def strip_keys(d: Any, drop: set[str]) -> Any:
    """A copy of a nested dict without the keys named in `drop` (at any depth)."""
    if isinstance(d, dict):
        return {k: strip_keys(v, drop) for k, v in d.items() if k not in drop}
    return d


def digest(d: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """`key: old -> new` for every leaf that differs between two nested dicts."""
    out = []
    for k in sorted(set(old) | set(new), key=str):
        a, b, name = old.get(k), new.get(k), f"{prefix}{k}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, name + ".")
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out
