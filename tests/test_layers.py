"""The dependency rules of shared/DESIGN.md ("imports flow one way"), checked on the import graph.

Every .py file under the project packages is parsed with `ast` (nothing is imported or run).
Every `import` and `from ... import` counts, at module level or inside a function; relative
imports are resolved against the importing module's package. `from pkg import name` is an
import of `pkg.name` when that is a project module, otherwise of `pkg`.

RULES below is the whole policy. Patterns: importers are file paths relative to the repository
root, imported modules are dotted names; in both, `*` matches one path segment (or part of one)
and `**` any number of segments, none included, so `factory.executors.**` is the package and
everything in it. A rule about a folder that does not exist yet (factory/metrics, trainers, eval)
holds vacuously now and is enforced as soon as a file appears there.
"""

from __future__ import annotations

import ast
import fnmatch
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("factory", "pipelines", "filters", "augment", "manifests")

STAGES = ("factory/stages/**", "filters/**", "augment/**", "factory/generators/**")
KERNEL = ("factory/*.py", "factory/faces/**", "factory/media/**")
CLI_FILES = ("factory/cli.py", "factory/run.py", "factory/__main__.py")  # the CLI layer itself


@dataclass(frozen=True)
class Rule:
    name: str
    importers: tuple[str, ...]  # file globs this rule applies to
    forbidden: tuple[str, ...]  # module patterns those files must not import
    exempt: tuple[str, ...] = ()  # file globs excluded from `importers`


# fmt: off
RULES = (
    #    name                      importers (files)                  must not import (modules)                                     except (files)
    Rule("stages stay plain",      STAGES,                            ("factory.executors.**", "factory.cluster.**", "pipelines.**",
                                                                       "factory.cli", "ray.**")),
    # augment's pixel functions (replay, occlusion, relight, face_geometry) are plain arrays: the
    # reader replays recorded augmentations with them; its stage is a layer above
    Rule("manifests know records", ("manifests/**",),                 ("filters.**", "augment.stage", "factory.generators.**",
                                                                       "factory.stages.**", "pipelines.**", "factory.executors.**")),
    Rule("metrics are pure",       ("factory/metrics/**",),           ("filters.**", "augment.**", "factory.stages.**", "factory.generators.**",
                                                                       "pipelines.**", "factory.executors.**", "factory.cli")),
    Rule("nothing imports the CLI", ("**",),                          ("factory.cli",),                                              CLI_FILES),
    Rule("trainers sit outside",   ("factory/trainers/**",),          ("pipelines.**", "factory.executors.**")),
    Rule("eval sits outside",      ("factory/eval/**",),              ("pipelines.**", "factory.executors.**")),
    Rule("report reads outputs",   ("factory/report/**",),            ("pipelines.**", "factory.executors.**", "factory.stages.**",
                                                                       "factory.generators.**", "ray.**")),
    Rule("kernel imports no layer above", KERNEL,                     ("pipelines.**", "filters.**", "augment.**"),                  CLI_FILES),
)
# fmt: on

# (importing file, imported module) pairs the current code has although a rule forbids them.
# Listed, not fixed, so that this test lands without touching the code; each is a to-do.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


def matches(name: str, pattern: str, sep: str) -> bool:
    """`*` is one segment (fnmatch within it), `**` zero or more whole segments."""

    def go(parts: list[str], pats: list[str]) -> bool:
        if not pats:
            return not parts
        if pats[0] == "**":
            return any(go(parts[i:], pats[1:]) for i in range(len(parts) + 1))
        return bool(parts) and fnmatch.fnmatchcase(parts[0], pats[0]) and go(parts[1:], pats[1:])

    return go(name.split(sep), pattern.split(sep))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_files() -> dict[str, Path]:
    """Module name -> file, for every .py file in the project packages."""
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports_of(path: Path, module: str, known: set[str]) -> set[str]:
    """The absolute names of every module `path` imports (project or not)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return found


def build_graph() -> tuple[dict[str, set[str]], dict[str, str]]:
    """(module -> imported modules, module -> file path relative to the root)."""
    files = project_files()
    graph = {m: imports_of(p, m, set(files)) for m, p in files.items()}
    return graph, {m: p.relative_to(ROOT).as_posix() for m, p in files.items()}


def violations(graph: dict[str, set[str]], paths: dict[str, str], rules=RULES) -> list[tuple[str, str, str]]:
    """(importing file, imported module, rule name) for every import a rule forbids."""
    found = []
    for module, imported in sorted(graph.items()):
        path = paths[module]
        for rule in rules:
            if not any(matches(path, g, "/") for g in rule.importers):
                continue
            if any(matches(path, g, "/") for g in rule.exempt):
                continue
            for target in sorted(imported):
                if any(matches(target, p, ".") for p in rule.forbidden):
                    found.append((path, target, rule.name))
    return found


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One concrete cycle (a -> b -> ... -> a) per strongly connected group of project modules."""
    edges = {m: sorted(t for t in ts if t in graph and t != m) for m, ts in graph.items()}
    selfloops = [[m, m] for m, ts in graph.items() if m in ts]
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def strongconnect(v):  # Tarjan; the project graph is small, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(set(group))

    for v in sorted(edges):
        if v not in index:
            strongconnect(v)

    cycles = []
    for group in groups:  # a shortest way back to the start, inside the group
        start = min(group)
        prev, frontier = {start: None}, [start]
        while frontier and start not in [w for v in frontier for w in edges[v]]:
            nxt = []
            for v in frontier:
                for w in edges[v]:
                    if w in group and w not in prev:
                        prev[w] = v
                        nxt.append(w)
            frontier = nxt
        last = next(v for v in frontier if start in edges[v])
        path = [last]
        while prev[path[-1]] is not None:
            path.append(prev[path[-1]])
        cycles.append([*reversed(path), start])
    return selfloops + sorted(cycles)


def describe(found: list[tuple[str, str, str]]) -> str:
    return "\n".join(f"{path} imports {target}: breaks rule '{rule}'" for path, target, rule in found)


# -- the real project ---------------------------------------------------------------------------


def test_the_scan_sees_the_project():
    graph, paths = build_graph()
    assert {"factory.cli", "factory.stages.ingest", "pipelines.pseudo_pairs", "manifests.writer"} <= set(graph)
    assert "factory.config" in graph["factory.cli"]  # a module-level import
    assert "factory.executors.local" in graph["factory.executors"]  # one inside a function


def test_dependency_rules_hold():
    graph, paths = build_graph()
    found = [v for v in violations(graph, paths) if v[:2] not in KNOWN_VIOLATIONS]
    assert not found, "imports against shared/DESIGN.md's dependency rules:\n" + describe(found)


def test_no_import_cycles():
    graph, paths = build_graph()
    known = {(m, t) for m, p in paths.items() for path, t in KNOWN_VIOLATIONS if p == path}
    cut = {m: {t for t in ts if (m, t) not in known} for m, ts in graph.items()}
    cycles = find_cycles(cut)
    assert not cycles, "import cycles among project modules:\n" + "\n".join(" -> ".join(c) for c in cycles)


# -- the checker itself, on small made-up graphs ------------------------------------------------


def fake(edges: dict[str, set[str]]):
    """A graph and file paths as build_graph returns them, for made-up modules."""
    paths = {m: m.replace(".", "/") + ".py" for m in edges}
    return edges, paths


def test_a_stage_importing_ray_or_an_executor_is_caught():
    graph, paths = fake({
        "filters.sharpness": {"ray", "numpy", "factory.faces.masks"},
        "factory.stages.crop": {"factory.executors.ray_executor"},
        "factory.faces.masks": {"numpy"},
    })
    found = violations(graph, paths)
    assert ("filters/sharpness.py", "ray", "stages stay plain") in found
    assert ("factory/stages/crop.py", "factory.executors.ray_executor", "stages stay plain") in found
    assert len(found) == 2  # numpy and the kernel are fine
    assert "filters/sharpness.py imports ray: breaks rule 'stages stay plain'" in describe(found)


def test_rules_for_folders_that_do_not_exist_yet_apply_when_they_appear():
    graph, paths = fake({
        "factory.metrics.lmd": {"filters.mouth_distance", "numpy"},
        "factory.trainers.dub": {"pipelines.pseudo_pairs", "manifests.reader"},
        "factory.eval.sync": {"factory.metrics.lmd", "factory.executors"},
        "factory.summary": {"augment.relight"},
        "manifests.reader": {"factory.generators.base"},
        "pipelines.pseudo_pairs": {"factory.cli"},
        "factory.cli": {"pipelines.pseudo_pairs"},  # the CLI may import anything below it
    })
    assert sorted(violations(graph, paths)) == [
        ("factory/eval/sync.py", "factory.executors", "eval sits outside"),
        ("factory/metrics/lmd.py", "filters.mouth_distance", "metrics are pure"),
        ("factory/summary.py", "augment.relight", "kernel imports no layer above"),
        ("factory/trainers/dub.py", "pipelines.pseudo_pairs", "trainers sit outside"),
        ("manifests/reader.py", "factory.generators.base", "manifests know records"),
        ("pipelines/pseudo_pairs.py", "factory.cli", "nothing imports the CLI"),
    ]


def test_a_cycle_is_caught_and_spelled_out():
    graph, _ = fake({"a.x": {"a.y"}, "a.y": {"a.z", "numpy"}, "a.z": {"a.x"}, "b.w": {"a.x"}, "b.v": {"b.v"}})
    assert find_cycles(graph) == [["b.v", "b.v"], ["a.x", "a.y", "a.z", "a.x"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_relative_and_from_imports_resolve(tmp_path):
    pkg = tmp_path / "filters"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from . import helper\n")
    (pkg / "helper.py").write_text("")
    (pkg / "new.py").write_text("from .helper import thing\nfrom ..pipelines import refilter\n"
                                "def f():\n    import ray.util\n")
    known = {"filters", "filters.helper", "filters.new", "pipelines.refilter"}
    assert imports_of(pkg / "new.py", "filters.new", known) == {"filters.helper", "pipelines.refilter", "ray.util"}
    assert imports_of(pkg / "__init__.py", "filters", known) == {"filters.helper"}


@pytest.mark.parametrize("name, pattern, sep, expected", [
    ("factory/cli.py", "factory/*.py", "/", True),
    ("factory/stages/ingest.py", "factory/*.py", "/", False),
    ("factory/faces/align.py", "factory/faces/**", "/", True),
    ("factory.executors", "factory.executors.**", ".", True),
    ("factory.executors_extra", "factory.executors.**", ".", False),
    ("ray.util.queue", "ray.**", ".", True),
    ("raylib", "ray.**", ".", False),
])
def test_patterns(name, pattern, sep, expected):
    assert matches(name, pattern, sep) is expected
