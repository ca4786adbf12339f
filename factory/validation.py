"""Every config value checked against its allowed range when the config is loaded, so a bad value
stops the command at once with a message naming the key, instead of hanging a worker
(`ingest.fps=-25`), silently making nothing (`ingest.clip_frames=0`) or rejecting every sample.

One table for the whole config: the key (a `*` matches any one section name), what the value must
be, in words and as a check. `pipelines/settings.py` holds the factory's table; any schema can
call `check_values` with its own.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from factory.config import ConfigError


@dataclass(frozen=True)
class Rule:
    text: str  # what the value must be, e.g. "an integer >= 1"
    ok: Callable[[Any], bool]


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def at_least(low: float, integer: bool = False) -> Rule:
    kind = "an integer" if integer else "a number"
    return Rule(f"{kind} >= {low:g}", lambda v: _number(v) and v >= low)


def above(low: float) -> Rule:
    return Rule(f"a number > {low:g}", lambda v: _number(v) and v > low)


def between(low: float, high: float, integer: bool = False) -> Rule:
    kind = "an integer" if integer else "a number"
    return Rule(f"{kind} in [{low:g}, {high:g}]", lambda v: _number(v) and low <= v <= high)


def one_of(*choices: str) -> Rule:
    return Rule("one of " + ", ".join(repr(c) for c in choices), lambda v: v in choices)


def optional(rule: Rule, meaning: str = "") -> Rule:
    return Rule(f"null{meaning} or {rule.text}", lambda v: v is None or rule.ok(v))


def leaves(d: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every non-mapping value in a nested dict."""
    for k, v in d.items():
        if isinstance(v, dict):
            yield from leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def rule_for(key: str, rules: dict[str, Rule]) -> Rule | None:
    if key in rules:
        return rules[key]
    for pattern, rule in rules.items():
        if "*" in pattern and fnmatch.fnmatchcase(key, pattern):
            return rule
    return None


def check_values(values: dict[str, Any], rules: dict[str, Rule]) -> None:
    """Raises ConfigError on the first value its rule refuses (keys without a rule: no range)."""
    for key, value in leaves(values):
        rule = rule_for(key, rules)
        if rule is not None and not rule.ok(value):
            raise ConfigError(f"config key '{key}' must be {rule.text}, got {value!r}")
