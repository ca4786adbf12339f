"""The README's configuration table documents every filter's settings, from the registry: a filter
added without its documentation fails here."""

from dataclasses import fields
from pathlib import Path

from filters.registry import filter_specs
from pipelines.settings import FactoryConfig

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
TABLE = [line for line in README.splitlines() if line.startswith("| `")]


def documented(section: str, key: str) -> bool:
    rows = [row.split(" | ")[0] for row in TABLE if row.startswith(f"| `{section}.")]
    return any(f"`{section}.{key}`" in row or f"`{key}`" in row for row in rows)


def test_every_filter_setting_is_in_the_config_table():
    missing = [f"filters.{spec.name}.{f.name}" for spec in filter_specs() for f in fields(spec.settings)
               if not documented(f"filters.{spec.name}", f.name)]
    assert not missing, f"document these in README's configuration reference: {missing}"


def test_every_top_level_key_and_section_is_in_the_config_table():
    missing = [f.name for f in fields(FactoryConfig)
               if f"| `{f.name}`" not in README and f"| `{f.name}." not in README]
    assert not missing, missing
