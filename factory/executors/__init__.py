"""Executors run a list of stages over records. Same stages, same results, in-process or on Ray.

Interface: `map(stages, records) -> iterator of records` (streaming; Ray yields in completion
order; when a map ends or is abandoned its stages are torn down), `stage_stats()` (stage name ->
{"records", "seconds", "passed", "dropped_<reason>"...} over every map so far), `close()`, and
`failures` (records given up on after worker deaths).
"""

from __future__ import annotations

from factory.executors.settings import ExecutorConfig


def make_executor(cfg: ExecutorConfig):
    if cfg.kind == "local":
        from factory.executors.local import LocalExecutor

        return LocalExecutor()
    if cfg.kind == "ray":
        from factory.executors.ray_executor import RayExecutor

        return RayExecutor(cfg)
    raise ValueError(f"unknown executor '{cfg.kind}' (config key executor.kind: 'ray' or 'local')")
